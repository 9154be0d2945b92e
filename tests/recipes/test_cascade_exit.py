"""`--cascade-exit risk` end to end (issue 37 item 2): the search prices its candidates' cascades by the risk rule,
the retraining fits the deployed cascade by it, every record says so; and the bad inputs of issue 37 item 2,
each one `neas: error:` line before any training."""

import dataclasses
import json
import shutil

import pytest
import yaml

from neas.cli import main
from neas.ensemble.io import load_ensemble
from neas.space import EnsembleArch, SearchSpace

SEARCH = ["--generations", "2", "--population", "8", "--parents", "4", "--mutations", "4", "--crossovers", "4"]
SEARCH += ["--bn-batches", "2", "--batch-size", "64", "--device", "cpu", "--seed", "1"]
MEAN_BUDGET = 600_000  # below the static MACs of the unconstrained winner (~1.1M on the tiny space)
TINY = SearchSpace.preset("tiny")


def _one_line(capsys, code, fragment):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("neas: error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    return err


def _search(supernet, out, *extra):
    return main(["search", "--supernet", str(supernet), "--out", str(out), *SEARCH, *extra])


def test_a_search_prices_every_cascade_by_the_risk_rule(trained_supernet, tmp_path):
    assert _search(trained_supernet, tmp_path / "s", "--max-mean-macs", "600K", "--cascade-exit", "risk") == 0
    arch = json.loads((tmp_path / "s" / "arch.json").read_text())
    assert arch["constraints"] == {"max_mean_macs": MEAN_BUDGET, "cascade_tolerance": 0.5, "cascade_exit": "risk"}
    assert arch["mean_macs"] <= MEAN_BUDGET < arch["macs"]
    members = [
        m for g in sorted((tmp_path / "s").glob("generation_*.json")) for m in json.loads(g.read_text())["members"]
    ]
    for m in [arch, *members]:
        cascade = m["cascade"]
        assert cascade["exit"] == "risk" and cascade["tolerance"] == 0.5 and cascade["folds"] == 2
        assert 0 <= cascade["coverage_at_5_risk"] <= 1 and 0 < cascade["full_coverage_at_5_risk"] <= 1
        assert cascade["kept_full"] == 0
    # the default rule's records carry their rule and none of the risk rule's numbers
    assert _search(trained_supernet, tmp_path / "a", "--max-mean-macs", "600K") == 0
    cascade = json.loads((tmp_path / "a" / "arch.json").read_text())["cascade"]
    assert cascade["exit"] == "accuracy" and "coverage_at_5_risk" not in cascade


def test_a_search_whose_scoring_images_no_candidate_covers_at_5_percent_risk_stops_after_one_generation(
    trained_supernet, tmp_path, capsys, monkeypatch
):
    """Scoring labels shifted by one class: every ensemble is confidently wrong, so the risk rule has nothing to
    keep for any candidate of the first generation."""
    import neas.recipes.search as recipe

    real = recipe.heldout_batches

    def shifted(*args, **kwargs):
        bn, val, calibration = real(*args, **kwargs)
        return bn, [(x, (y + 1) % 10) for x, y in val], calibration

    monkeypatch.setattr(recipe, "heldout_batches", shifted)
    code = _search(trained_supernet, tmp_path / "s", "--max-mean-macs", "600K", "--cascade-exit", "risk")
    _one_line(capsys, code, "cascade_exit risk: none of the 8 ensembles of the first generation covers any of the")
    assert not (tmp_path / "s" / "arch.json").exists() and not (tmp_path / "s" / "generation_00.json").exists()
    # the top-1 rule is refused nothing: it has images to keep right whatever the labels
    assert _search(trained_supernet, tmp_path / "a", "--max-mean-macs", "600K") == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cascade-exit", "coverage"], "cascade_exit: unknown 'coverage'"),
        (["--cascade-exit", "risky"], "choose accuracy, risk"),
        (["--max-mean-macs", "10K", "--cascade-exit", "risk"], "max_mean_macs=10000: below the cheapest path"),
        (["--max-mean-macs=-1M"], "max_mean_macs: amount '-1M' must be"),
        (["--max-mean-macs", "inf"], "max_mean_macs: amount 'inf' must be a finite number"),
        # the exit rule of a cascade the search does not price: refused, not silently ignored
        (["--cascade-exit", "risk", "--max-macs", "700K"], "cascade_exit (--cascade-exit): 'risk' is read only when"),
        (["--cascade-tolerance", "7", "--max-macs", "700K"], "cascade_tolerance (--cascade-tolerance): 7.0 is read"),
    ],
)
def test_bad_search_cascade_options_are_one_line_before_anything_runs(
    trained_supernet, tmp_path, capsys, extra, message
):
    _one_line(capsys, _search(trained_supernet, tmp_path / "x", *extra), message)
    assert not (tmp_path / "x").exists()


def _never_train(monkeypatch):
    import neas.recipes.run as run

    def train(*args, **kwargs):
        raise AssertionError("the supernet was trained before the refusal")

    monkeypatch.setattr(run, "train_supernet", train)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.max_mean_macs=1K"], "max_mean_macs=1000: below the cheapest path of the space alone"),
        (["search.max_mean_macs=nan"], "max_mean_macs: amount 'nan' must be a finite number >= 0"),
        (["search.max_mean_macs=-2M"], "max_mean_macs: amount '-2M' must be"),
        (["search.max_mean_macs=1M", "search.cascade_exit=bayes"], "cascade_exit: unknown 'bayes'"),
        (["retrain.cascade=true", "retrain.holdout=0.1", "retrain.cascade_exit=bayes"], "cascade_exit: unknown"),
        (["search.cascade_exit=risk"], "give max_mean_macs (--max-mean-macs) or min_mean_macs, or pareto mean_macs"),
        (["budgets=[1M]", "search.cascade_tolerance=2"], "cascade_tolerance (--cascade-tolerance): 2.0 is read only"),
    ],
)
def test_neas_run_refuses_a_bad_cascade_budget_or_rule_before_the_supernet_is_trained(
    tmp_path, capsys, monkeypatch, overrides, message
):
    _never_train(monkeypatch)
    _one_line(capsys, main(["run", "--out", str(tmp_path / "r"), *overrides]), message)
    assert not (tmp_path / "r").exists()


def test_neas_run_refuses_a_mean_macs_budget_on_a_one_path_space_before_training(tmp_path, capsys, monkeypatch):
    _never_train(monkeypatch)
    space = {**TINY.to_dict(), "num_paths": 1, "split": [0, 0], "name": "tiny-k1"}
    (tmp_path / "k1.yaml").write_text(yaml.safe_dump(space))
    code = main(["run", "--out", str(tmp_path / "r"), f"space={tmp_path / 'k1.yaml'}", "search.max_mean_macs=1M"])
    # named by the bound the user set, not by the retrain.cascade it sets for them
    _one_line(capsys, code, "max_mean_macs: the space 'tiny-k1' has K = 1 path, and a single network has no cascade")
    assert not (tmp_path / "r").exists()


def test_neas_run_hands_the_searchs_exit_rule_to_the_retraining():
    from neas.config import from_dict
    from neas.recipes.run import stage_configs
    from neas.schemas.run import RunConfig

    cfg = from_dict(
        RunConfig, {"space": "tiny", "data": "digits", "search": {"max_mean_macs": "1M", "cascade_exit": "risk"}}
    )
    _, search, retrain = stage_configs(cfg)
    assert search.constraints.cascade_exit == "risk"
    assert retrain.cascade and retrain.cascade_exit == "risk"
    given = dataclasses.replace(cfg, retrain={"cascade_exit": "accuracy"})
    assert stage_configs(given)[2].cascade_exit == "accuracy"  # the retrain section's own choice wins
    # budgets: on mean MACs price every candidate as a cascade (the search's Pareto front on mean_macs):
    # the exit rule counts there, with no mean-MACs bound in the search section
    fronts = dataclasses.replace(
        cfg, budgets=["1M"], budget_metric="mean_macs", search={"cascade_exit": "risk", "cascade_tolerance": 2}
    )
    _, search, retrain = stage_configs(fronts)
    assert search.pareto == "mean_macs" and search.constraints.cascade_tolerance == 2
    assert retrain.cascade and (retrain.cascade_exit, retrain.cascade_tolerance) == ("risk", 2)


# --- the deployed cascade: retrain, evaluate, export --------------------------------------------------------


def _retrain(folder, *extra):
    arch = folder / "arch.json"
    EnsembleArch.sample(TINY, 5).save(arch, space=TINY.to_dict())
    argv = ["retrain", "--arch", str(arch), "--data", "digits", "--out", str(folder / "run"), "--epochs", "4"]
    argv += ["--batch-size", "64", "--holdout", "0.2", "--device", "cpu", "--seed", "2", "--eval-every", "4"]
    return main([*argv, *extra])


@pytest.fixture(scope="module")
def risk_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("risk")
    assert _retrain(folder, "--cascade", "--cascade-exit", "risk", "--cascade-tolerance", "1") == 0
    return folder / "run"


def test_retrain_fits_the_deployed_cascade_by_the_risk_rule_and_records_it(risk_model):
    result = json.loads((risk_model / "eval.json").read_text())
    cascade = result["cascade"]
    assert cascade["exit"] == "risk" and cascade["tolerance_points"] == 1
    assert "held-out part" in cascade["fitted_on"]
    assert 0 <= cascade["coverage_at_5_risk"] <= 1 and 0 < cascade["full_coverage_at_5_risk"] <= 1
    _, info = load_ensemble(risk_model / "model.safetensors")
    assert info.cascade.exit_rule == "risk" and list(info.cascade.thresholds) == cascade["thresholds"]


def test_the_report_draws_a_risk_fitted_cascade(risk_model, tmp_path):
    from neas.report.plots import _KEPT, plot_cascade

    assert _KEPT["risk"] == "coverage at 5 % risk"
    assert plot_cascade(json.loads((risk_model / "eval.json").read_text()), tmp_path / "c.png").is_file()


def test_evaluate_refits_by_either_rule_and_the_export_carries_the_rule(risk_model, tmp_path, capsys):
    from neas.ensemble.cascade_export import OnnxCascade

    model = shutil.copytree(risk_model, tmp_path / "model")
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--checkpoint", str(model), "--device", "cpu", "--no-latency", "--json", str(out), "--cascade"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["cascade"]["exit"] == "accuracy"
    assert load_ensemble(model / "model.safetensors")[1].cascade.exit_rule == "accuracy"
    assert main([*argv, "--cascade-exit", "risk", "--cascade-tolerance", "1", "--force"]) == 0
    assert json.loads(out.read_text())["cascade"]["exit"] == "risk"
    export = ["export", "--checkpoint", str(model), "--format", "onnx", "--cascade", "--out", str(tmp_path / "c")]
    assert main(export) == 0
    spec = json.loads((tmp_path / "c" / "cascade.json").read_text())
    assert spec["fitted"]["exit"] == "risk" and spec["fitted"]["tolerance"] == 1
    assert OnnxCascade(tmp_path / "c").exit_rule == "risk"
    # range-checked on read (provenance, but a rule neas does not know is refused, not carried on)
    spec["fitted"]["exit"] = "bayes"
    (tmp_path / "c" / "cascade.json").write_text(json.dumps(spec))
    with pytest.raises(Exception, match=r"fitted 'exit' must be one of accuracy, risk, got 'bayes'"):
        OnnxCascade(tmp_path / "c")


def test_a_risk_fit_with_nothing_to_keep_is_one_line_and_keeps_the_trained_model(tmp_path, capsys, monkeypatch, caplog):
    """Held-out labels shifted by one class: the full ensemble is confidently wrong, so the risk rule has no
    coverage to keep; the training is not lost, and the order and temperature are fitted once."""
    import logging

    import neas.recipes.retrain as recipe

    caplog.set_level(logging.INFO, logger="neas")

    real = recipe.path_logits
    monkeypatch.setattr(
        recipe, "path_logits", lambda net, batches: (lambda lg, y: (lg, (y + 1) % 10))(*real(net, batches))
    )
    code = _retrain(tmp_path, "--cascade", "--cascade-exit", "risk", "--epochs", "1")
    err = _one_line(capsys, code, "cascade_exit risk: the full ensemble covers none of the")
    assert "use cascade_exit accuracy" in err and "the trained model is saved without a cascade" in err
    _, info = load_ensemble(tmp_path / "run" / "model.safetensors")
    assert info.cascade is None and info.path_order is not None
    assert info.temperature is not None
    assert sum("held-out NLL" in r.getMessage() for r in caplog.records) == 1  # not refitted after the refusal
    assert not (tmp_path / "run" / "eval.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cascade-exit", "risk"], "--cascade-exit is read only with --cascade, which is not given"),
        (["--cascade", "--cascade-exit", "bayes"], "cascade_exit: unknown 'bayes'"),
    ],
)
def test_bad_retrain_and_evaluate_exit_rules_are_one_line_before_anything_runs(
    risk_model, tmp_path, capsys, extra, message
):
    _one_line(capsys, _retrain(tmp_path, *extra), message)
    assert not (tmp_path / "run").exists()
    before = (risk_model / "model.safetensors").read_bytes()
    _one_line(capsys, main(["evaluate", "--checkpoint", str(risk_model), "--no-latency", *extra]), message)
    assert (risk_model / "model.safetensors").read_bytes() == before
