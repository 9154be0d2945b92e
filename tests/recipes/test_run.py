import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neas.cli import main
from neas.config import from_dict, load_yaml
from neas.errors import NeasError
from neas.log import MetricLogger
from neas.recipes.run import DEMO, RunConfig, format_summary, run_pipeline, stage_configs
from neas.schemas.run import CONFIGS

from ..helpers import Killed, checkpoint_of, tiny_supernet_section

SMALL = {
    "space": "tiny",
    "data": "digits",
    "seed": 4,
    "device": "cpu",
    "supernet": tiny_supernet_section(),
    "search": {
        "max_macs": "0.7M",
        "population": 6,
        "parents": 2,
        "generations": 3,
        "mutations": 2,
        "crossovers": 2,
        "bn_batches": 1,
    },
    "compare_random": True,
    "retrain": {
        "epochs": 3,
        "batch_size": 64,
        "eval_every": 3,
        "holdout": 0.1,
        "corruptions": ["gaussian_noise", "fog"],
        "severities": "1,5",
    },
}


def cfg(out, **kw):
    return from_dict(RunConfig, {**SMALL, "out": str(out), **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    run_pipeline(cfg(out))
    return out


@pytest.mark.parametrize(
    "path", [p for p in sorted(CONFIGS.glob("*.yaml")) if not p.name.startswith("detect")], ids=lambda p: p.name
)
def test_every_shipped_config_loads(path):
    config = from_dict(RunConfig, load_yaml(path))
    sn, se, _rt = stage_configs(config)
    assert Path(sn.out).parent == Path(config.out)
    assert se.supernet == sn.out
    assert path.read_text().startswith("# neas run") or "torchrun" in path.read_text().splitlines()[1]


def test_paper_settings_in_the_imagenet_config():
    sn, se, rt = stage_configs(from_dict(RunConfig, load_yaml(CONFIGS / "imagenet.yaml")))
    assert (sn.epochs, sn.shrink.every, sn.shrink.drop, sn.shrink.beta) == (120, 20, 20, 1e-3)
    assert (se.evolution.population, se.evolution.generations) == (50, 20)
    assert rt.epochs == 350


def test_run_directory_and_report(finished):
    for stage in ("supernet", "search", "search_random", "retrain", "report"):
        assert (finished / stage).is_dir(), stage
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["macs"] <= 700_000
    assert 0 < summary["test_top1"] <= 1
    report = finished / "report"
    html = (report / "index.html").read_text()
    images = [
        "training.png",
        "evolution.png",
        "pareto.png",
        "arch.png",
        "reliability.png",
        "anytime.png",
        "corruptions.png",
        "mistakes.png",  # the most confident mistakes with the paths' votes, from the reloaded test split
    ]
    images += [f"shrink_round_{i:02d}.png" for i in range(3)]
    result = json.loads((finished / "retrain" / "eval.json").read_text())
    for member in ("ensemble", "path0", "path1"):
        assert {"nll", "ece", "brier"} <= set(result[member]), member
    assert result["temperature"]["images"] == 143
    assert "calibrated" in result["ensemble"]
    assert len(result["anytime"]) == 2
    assert all("macs" in e and "latency_ms" in e for e in result["anytime"])
    assert set(result["corruptions"]["results"]) == {"gaussian_noise", "fog"}
    assert result["corruptions"]["severities"] == [1, 5]
    for name in images:
        assert (report / name).stat().st_size > 5000, name
        assert name in html


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["supernet", "search", "retrain"])
def test_kill_in_any_stage_and_resume(finished, tmp_path, kill_after, stage):
    import neas.rundir as rundir
    import neas.train.recipe as training

    module, attr, when = {
        "supernet": (training, "save_checkpoint", checkpoint_of("train-supernet")),
        "search": (rundir, "write_json", lambda path, *a, **kw: "generation_" in str(path)),
        "retrain": (training, "save_checkpoint", checkpoint_of("retrain")),
    }[stage]
    restore = kill_after(module, attr, after=2, when=when)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        run_pipeline(cfg(out))
    restore()
    with pytest.raises(NeasError, match="already exists: pass --resume"):
        run_pipeline(cfg(out))
    run_pipeline(cfg(out, resume=True))
    a, b = json.loads((out / "summary.json").read_text()), json.loads((finished / "summary.json").read_text())
    a.pop("report"), b.pop("report")
    assert a == b
    wa, wb = (
        load_file(str(out / "retrain" / "model.safetensors")),
        load_file(str(finished / "retrain" / "model.safetensors")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_with_another_config_is_refused(finished):
    with pytest.raises(NeasError, match="config differs"):
        run_pipeline(cfg(finished, seed=5, resume=True))


def test_bad_section_keys(tmp_path):
    with pytest.raises(NeasError, match="unknown key 'supernet.shrink_evry' \\(did you mean 'shrink_every'\\?\\)"):
        stage_configs(cfg(tmp_path / "x", supernet={"shrink_evry": 2}))
    with pytest.raises(NeasError, match="supernet.space: set by `neas run` itself"):
        stage_configs(cfg(tmp_path / "x", supernet={"space": "cifar"}))


def test_report_cli(finished, capsys, tmp_path):
    assert main(["report", str(finished)]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "nothing to report" in capsys.readouterr().err


def test_report_of_a_run_killed_mid_write_of_its_metric_lines_renders(finished, capsys, tmp_path):
    """A kill can cut the last metrics.jsonl line short (``append_line``'s promise: readers skip it)."""
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(finished, killed)
    for stage in ("supernet", "retrain"):
        with open(killed / stage / "metrics.jsonl", "a") as f:
            f.write('{"step": 99, "epoch": 9, "loss": 4.1')  # no closing brace, no newline
    assert main(["report", str(killed)]) == 0, capsys.readouterr().err
    assert (killed / "report" / "index.html").is_file()
    assert MetricLogger.read(killed / "retrain") == MetricLogger.read(finished / "retrain")


def test_demo_is_the_default():
    assert DEMO.is_file()
    demo = from_dict(RunConfig, load_yaml(DEMO))
    assert demo.space == "tiny"
    assert demo.data == "digits"
    assert demo.search["max_macs"] == "0.7M"


@pytest.mark.slow
def test_the_demo_runs_end_to_end(tmp_path, capsys):
    """`neas run` with no arguments (here with --out): the whole demo, about a minute on 2 cores."""
    assert main(["run", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "final: test top-1" in out
    assert "budget: max_macs 0.7M" in out
    assert "report:" in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["macs"] <= 700_000
    assert summary["test_top1"] > 0.9
    result = json.loads((tmp_path / "demo" / "retrain" / "eval.json").read_text())
    assert {"nll", "ece", "brier"} <= set(result["ensemble"])
    assert "temperature" in result
    assert "corruptions" in result
    assert len(result["anytime"]) == 2


@pytest.mark.slow
def test_one_search_retrains_one_ensemble_per_budget(tmp_path, capsys, monkeypatch):
    search = {**SMALL["search"], "max_macs": None, "population": 8, "parents": 4, "generations": 2}
    kw = dict(
        budgets=["0.5M", "0.6M", "0.8M"], compare_random=False, search=search, retrain={"epochs": 1, "batch_size": 64}
    )
    summary = run_pipeline(cfg(tmp_path / "b", **kw))
    budgets = summary["budgets"]
    assert [b["budget"] for b in budgets] == ["0.5M", "0.6M", "0.8M"]
    pareto = json.loads((tmp_path / "b" / "search" / "pareto.json").read_text())
    assert pareto["front"][0]["macs"] < 5e5  # the front is anchored at the space's cheapest ensemble (0.32M MACs)
    for b, limit in zip(budgets, (5e5, 6e5, 8e5)):
        assert b["macs"] <= limit
        assert (Path(b["dir"]) / "retrain" / "model.safetensors").is_file()
        within = [m for m in pareto["front"] if m["macs"] <= limit]
        assert b["supernet_acc"] == max(m["ensemble_acc"] for m in within)  # the best member within the budget
    assert (tmp_path / "b" / "report" / "front.png").stat().st_size > 5000
    # the budgets' retrainings again, two at once as local subprocesses (one thread each, as the suite
    # runs): the numbers of the default executor (in this process, one after another)
    for budget in budgets:
        shutil.rmtree(Path(budget["dir"]) / "retrain")
    again = run_pipeline(cfg(tmp_path / "b", resume=True, executor="local", max_parallel=2, **kw))
    numbers = [(b["budget"], b["test_top1"], b["test_nll"]) for b in budgets]
    assert [(b["budget"], b["test_top1"], b["test_nll"]) for b in again["budgets"]] == numbers
    assert len(list((tmp_path / "b" / "jobs").glob("*/*_log.err"))) == 3  # each in its own process
    assert main(["run", "--out", str(tmp_path / "x"), "budgets=[0.5M, lots]"]) == 2
    assert "budgets: 'lots' is not a macs amount" in capsys.readouterr().err


def test_a_run_held_to_the_cascades_mean_macs_deploys_a_cascade_within_the_budget(tmp_path, capsys):
    """search.max_mean_macs below the static MACs of what max_macs would pick: the retraining fits the
    winner's cascade for the user, and the test split's measured mean MACs stay within 10 % of the budget."""
    budget = 400_000  # the tiny space's ensembles cost 0.32M-1.65M statically; its unconstrained winners ~1.1M
    search = {k: v for k, v in SMALL["search"].items() if k != "max_macs"}
    retrain = {k: v for k, v in SMALL["retrain"].items() if k not in ("holdout", "corruptions", "severities")}
    run = cfg(tmp_path / "run", search={**search, "max_mean_macs": budget}, retrain=retrain, compare_random=False)
    summary = run_pipeline(run)
    assert summary["mean_macs"] <= 1.1 * budget
    arch = json.loads((tmp_path / "run" / "search" / "arch.json").read_text())
    assert arch["mean_macs"] <= budget and "cascade" in arch
    result = json.loads((tmp_path / "run" / "retrain" / "eval.json").read_text())
    assert result["cascade"]["mean_macs"] == summary["mean_macs"]
    assert "mean per image as a cascade" in format_summary(summary)
    with pytest.raises(NeasError, match="retrain.cascade: False leaves no cascade to deploy"):
        run_pipeline(
            cfg(tmp_path / "no", search={**search, "max_mean_macs": budget}, retrain={**retrain, "cascade": False})
        )


def test_a_neas_run_directory_as_checkpoint_means_its_retrained_ensemble(finished, tmp_path):
    from neas.ensemble.io import load_ensemble

    net, info = load_ensemble(finished)
    ref, ref_info = load_ensemble(finished / "retrain")
    assert info == ref_info
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
    assert main(["evaluate", "--checkpoint", str(finished), "--json", str(tmp_path / "e.json"), "--no-latency"]) == 0


def test_a_dry_run_says_what_would_run_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), "--dry-run", "search.max_macs=0.7M"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("neas run --dry-run: nothing is started or written")
    for fragment in ("data: digits, 10 classes", "supernet/", "search/", "retrain/", "MACs at 10 classes", "max_macs"):
        assert fragment in text, fragment
    assert re.search(r"budget \{'max_macs': 700000\}: [\d.]+% of 2000 random ensembles", text)
    assert not out.exists()


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("search.max_mean_macs=0.1M", "max_mean_macs=100000: below the cheapest path of the space alone"),
        ("search.max_macs=0.1M", "max_macs"),
        ("retrain.batch_size=100000", "retrain.batch_size"),
    ],
)
def test_a_dry_run_refuses_what_the_run_would_refuse_with_the_same_line(tmp_path, capsys, override, fragment):
    """``neas run --dry-run search.max_mean_macs=0.1M`` printed a plan the run then refused (issue 39
    item 4, review): the dry run makes the run's checks before training, and says the same line."""
    lines = []
    for dry in (["--dry-run"], []):
        out = tmp_path / ("dry" if dry else "real")
        assert main(["run", "--out", str(out), *dry, override]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("neas: error: ") and fragment in err and "\n" not in err, err
        lines.append(err)
        assert not out.exists()
    assert lines[0] == lines[1]


def test_the_checks_before_a_run_list_an_image_folder_without_a_data_line(tmp_path, caplog):
    """Only the loading that holds the images says how (issue 39 item 4: the checks' listing said "stream
    from disk", then the run decoded the images into memory)."""
    import logging

    from PIL import Image

    from neas.recipes.run import _check_before_training
    from neas.recipes.run_plan import describe_plan

    for c in ("a", "b"):
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
        for i in range(40):
            Image.new("RGB", (32, 32), (i * 6, 0, 0)).save(tmp_path / "data" / "train" / c / f"{i}.png")
    config = cfg(tmp_path / "x", data="imagefolder", data_dir=str(tmp_path / "data"))
    config.supernet["batch_size"] = config.retrain["batch_size"] = 16
    with caplog.at_level(logging.INFO, logger="neas.data"):
        _check_before_training(*stage_configs(config))
        describe_plan(config, *stage_configs(config))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("neas.data")] == []
