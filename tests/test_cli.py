import json
import subprocess
import sys

import pytest

from neas.cli import main


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
