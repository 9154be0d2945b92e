import json
import subprocess
import sys

import pytest

from neas.cli import main
from neas.errors import NeasError


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_arch_json(capsys):
    code, out, _ = run(capsys, "arch", "neas-m", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["split"] == 16
    assert len(data["paths"]) == 2
    assert all(isinstance(data[k], int) for k in ("macs", "paper_flops", "params"))
    assert round(data["paper_flops"] / 1e6) in range(467, 477)


def test_arch_table(capsys):
    code, out, _ = run(capsys, "arch", "neas-s")
    assert code == 0
    assert "L20" in out
    assert "paper FLOPs 315.15M" in out
    assert "paper (Table 1): 314M" in out


def test_arch_file_with_space(capsys, tmp_path):
    from neas.space import EnsembleArch, SearchSpace

    arch = EnsembleArch.sample(SearchSpace.preset("tiny"), 0)
    path = tmp_path / "arch.json"
    arch.save(path, space="tiny")
    code, out, _ = run(capsys, "arch", str(path), "--json", "--num-classes", "10")
    assert code == 0
    assert json.loads(out)["paths"] == arch.to_json()["paths"]


def test_version_is_printed(capsys):
    import neas

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"neas {neas.__version__}"


def test_space(capsys):
    code, out, _ = run(capsys, "space", "tiny")
    assert code == 0
    assert "26,000 ensembles" in out


def test_space_prints_the_macs_range_a_budget_can_take(capsys):
    from neas.cost import cost_table
    from neas.space import SearchSpace, ShrunkSpace

    code, out, _ = run(capsys, "space", "tiny", "--num-classes", "10")
    assert code == 0
    lo, hi = cost_table(SearchSpace.preset("tiny"), 10).range(ShrunkSpace.full(SearchSpace.preset("tiny")), "macs")
    assert f"ensembles (10 classes): {lo / 1e6:.3f}M-{hi / 1e6:.3f}M MACs" in out
    assert "a cascade costs at least" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["arch", "neas-x"], "unknown arch preset 'neas-x' (did you mean 'neas-s'?)"),
        (["space", "imagenett"], "unknown search space preset 'imagenett'"),
        (["arch", "neas-s", "--space", "tiny"], "20 layers per path but space 'tiny' has 4"),
    ],
)
def test_errors_are_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_arch_files(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"split": 1, "paths": [["k3e3", "skip", "k5e3", "k3e3"], ["k3e3", "k5e3", "skip", "k5e3"]]}')
    code, _, err = run(capsys, "arch", str(bad), "--space", "tiny")
    assert code == 2, err
    assert "layer L3 (path 1): skip is not allowed on the first layer of a stage" in err
    bad.write_text('{"split": 1, "paths": [["k3e3", "k3e3"]')
    code, _, err = run(capsys, "arch", str(bad))
    assert code == 2, err
    assert "malformed arch JSON" in err


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "neas", "arch", "neas-s", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["split"] == 20


def _resolved(*argv):
    from neas.cli import _config, build_parser

    return _config(build_parser().parse_args(list(argv)))


def test_compare_passes_its_run_configs_overrides_on_and_keeps_its_own(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("space: tiny\ndata: digits\nsupernet: {epochs: 30}\nsearch: {max_macs: 0.7M}\n")
    argv = ["compare", "--config", str(config), "--out", str(tmp_path / "c"), "--rows", "neas", "single"]
    cfg = _resolved(*argv, "supernet.epochs=6", "slurm.partition=gpu", "seed=3")
    assert cfg.rows == ["neas", "single"]  # a list flag before the overrides does not take them as values
    assert cfg.run_overrides == ["supernet.epochs=6", "seed=3"] and cfg.slurm["partition"] == "gpu"
    assert cfg.run_config_data()["supernet"] == {"epochs": 6} and cfg.run_config_data()["seed"] == 3
    with pytest.raises(NeasError, match="the supernet stage has no key 'epoch' \\(did you mean 'epochs'\\?\\)"):
        _resolved(*argv, "supernet.epoch=6")


def test_compares_overrides_reach_every_rows_job_config(tmp_path):
    import yaml

    from neas.recipes.compare import _plan
    from neas.recipes.compare.rows import run_config

    config = tmp_path / "run.yaml"
    config.write_text("space: tiny\ndata: digits\nsupernet: {epochs: 30}\nsearch: {max_macs: 0.7M}\n")
    cfg = _resolved(
        "compare", "--config", str(config), "--out", str(tmp_path / "c"), "--seeds", "1", "retrain.epochs=2"
    )
    plan = _plan(cfg, run_config(cfg))
    runs = [yaml.safe_load(text) for path, text in plan.files.items() if path.name.endswith("-seed0.yaml")]
    assert len(runs) == 3 and all(r["retrain"]["epochs"] == 2 and r["supernet"]["epochs"] == 30 for r in runs)


def test_run_refuses_a_bare_stage_key_naming_its_dotted_forms(capsys):
    code, _, err = run(capsys, "run", "epochs=3")
    assert code == 2
    assert (
        "override 'epochs=3': epochs is a key of a stage, not of the pipeline; give it as supernet.epochs=3 or "
        "retrain.epochs=3" in err
    )
    assert _resolved("run", "--budgets", "1M", "2M", "retrain.epochs=3").budgets == ["1M", "2M"]
