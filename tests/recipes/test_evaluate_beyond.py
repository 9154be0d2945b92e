"""`neas evaluate` beyond calibration (issue 28): out-of-distribution detection, selective prediction,
adaptive ECE / MCE and the confidence-gated cascade, on a digits model with an image-folder OOD set;
every reported number recomputed from `--save-scores` by an independent implementation."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from neas.cli import main
from neas.data import BatchLoader, load_dataset
from neas.data.heldout import heldout_images
from neas.ensemble import build_ensemble
from neas.ensemble.cascade import fit_thresholds
from neas.ensemble.io import load_ensemble, save_ensemble
from neas.recipes.retrain import RetrainConfig, retrain
from neas.space import EnsembleArch, SearchSpace

TINY = SearchSpace.preset("tiny")
ARCH = EnsembleArch.sample(TINY, 5)


@pytest.fixture(scope="module")
def ood_folder(tmp_path_factory):
    """Noise images of another size (48 x 48, RGB and grey), in a class-sorted folder with a test split."""
    root = tmp_path_factory.mktemp("ood")
    rng = np.random.default_rng(0)
    for c, mode in enumerate(["RGB", "L"]):
        folder = root / "test" / f"noise{c}"
        folder.mkdir(parents=True)
        for j in range(30):
            shape = (48, 48, 3) if mode == "RGB" else (48, 48)
            Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(folder / f"{j:02d}.png")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory, ood_folder):
    """A 2-path digits ensemble retrained with 20 % of its training split held out (cascade, temperature), whose
    eval.json scores an OOD folder and a cascade fitted at retraining."""
    root = tmp_path_factory.mktemp("beyond")
    ARCH.save(root / "arch.json", space=TINY.to_dict())
    cfg = dict(arch=str(root / "arch.json"), data="digits", out=str(root / "run"), epochs=6, batch_size=64)
    ood = dict(ood_data="imagefolder", ood_data_dir=str(ood_folder), cascade=True)
    return retrain(RetrainConfig(**cfg, **ood, device="cpu", seed=2, holdout=0.2, eval_every=6))


def _evaluate(model, tmp_path, *extra):
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--checkpoint", str(model), "--device", "cpu", "--no-latency", "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def _raw(block: dict) -> dict:
    """A predictor's block without the ensemble's temperature-scaled copy."""
    return {key: value for key, value in block.items() if key != "calibrated"}


def _aurc(confidence, correct):
    """AURC by definition: accept in decreasing confidence (equal ones together); sum risk x coverage step."""
    n, total, covered, accepted, wrong = len(confidence), 0.0, 0.0, 0, 0
    for value in sorted(set(confidence.tolist()), reverse=True):
        take = confidence == value
        accepted += int(take.sum())
        wrong += int((~correct[take]).sum())
        total += wrong / accepted * (accepted / n - covered)
        covered = accepted / n
    return total


def test_eval_json_carries_ood_selective_and_calibration_numbers_that_save_scores_recompute(
    model, ood_folder, tmp_path
):
    scores = tmp_path / "scores.npz"
    result = _evaluate(
        model, tmp_path, "--ood-data", "imagefolder", "--ood-data-dir", str(ood_folder), "--save-scores", str(scores)
    )
    assert result["ood"]["images"] == 60
    ensemble_scores = {"msp", "entropy", "energy", "mutual_information", "disagreement"}
    assert set(_raw(result["ood"]["ensemble"])) == ensemble_scores
    for name in ("ensemble", "path0", "path1"):
        for field in ("adaptive_ece", "mce"):
            assert 0 <= result[name][field] <= 1
        assert {"aurc", "augrc", "risk_at_80", "coverage_at_5_risk", "curve"} <= set(result[name]["selective"])
    assert result["ensemble"]["uncertainty"]["mutual_information"] >= 0

    arrays = np.load(scores)
    labels = arrays["labels"]
    assert len(labels) == result["images"]
    calibrated = {"ensemble_calibrated": (result["ensemble"]["calibrated"], result["ood"]["ensemble"]["calibrated"])}
    blocks = {name: (result[name], _raw(result["ood"][name])) for name in ("ensemble", "path0", "path1")} | calibrated
    for name, (block, ood) in blocks.items():
        correct = arrays[f"{name}_pred"] == labels
        assert result["ensemble" if name == "ensemble_calibrated" else name]["top1"] == pytest.approx(correct.mean())
        expected = _aurc(arrays[f"{name}_confidence"], correct)
        assert block["selective"]["aurc"] == pytest.approx(expected, abs=1e-6)
        assert set(ood) == (ensemble_scores if name.startswith("ensemble") else {"msp", "entropy", "energy"})
        for score, reported in ood.items():
            inside, outside = arrays[f"in_{name}_{score}"], arrays[f"out_{name}_{score}"]
            y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
            s = np.r_[inside, outside]
            assert reported["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
            assert reported["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
            assert reported["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-6)
            fpr, tpr, _ = roc_curve(y, s)
            assert reported["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-6)
    # the ensemble's confidence is its raw softmax, the calibrated one after the stored temperature
    net, info = load_ensemble(model)
    x, _ = zip(*BatchLoader(load_dataset("digits", "test", TINY.input_size), 512, False).epoch(0))
    with torch.no_grad():
        mean = torch.cat([torch.stack(net.eval().path_logits(b)).mean(0) for b in x])
    for name, t in (("ensemble", 1.0), ("ensemble_calibrated", info.temperature_value)):
        expected = (mean.double() / t).softmax(1).max(1).values.numpy()
        np.testing.assert_allclose(arrays[f"{name}_confidence"], expected, atol=1e-5)
    # the digits model tells noise from digits by its confidence
    assert result["ood"]["ensemble"]["msp"]["auroc"] > 0.8


def test_the_cascade_is_fitted_on_the_held_out_part_stored_and_reported_on_the_split(model, tmp_path):
    model = Path(shutil.copytree(model, tmp_path / "model"))  # --cascade stores its fit in the model file
    result = _evaluate(model, tmp_path, "--cascade", "--cascade-tolerance", "1")
    cascade = result["cascade"]
    assert len(cascade["thresholds"]) == 1
    assert sum(cascade["stop_fraction"]) == pytest.approx(1.0)
    first, full = result["anytime"][0]["macs"], result["anytime"][-1]["macs"]
    assert first <= cascade["mean_macs"] <= full
    assert cascade["mean_macs"] == pytest.approx(
        cascade["stop_fraction"][0] * first + cascade["stop_fraction"][1] * full
    )
    assert cascade["full_top1"] == pytest.approx(result["ensemble"]["top1"])
    assert "held-out part" in cascade["fitted_on"]
    assert [p["threshold"] for p in cascade["curve"]] == sorted(p["threshold"] for p in cascade["curve"])
    net, info = load_ensemble(model)
    assert list(info.cascade.thresholds) == cascade["thresholds"]
    assert list(info.cascade.order) == result["anytime_order"]["order"]
    # fitted on the held-out part of the training split, in the anytime order, at the anytime costs
    held = heldout_images("digits", None, info.holdout, TINY.input_size)
    x, y = zip(*BatchLoader(held, 512, False).epoch(0))
    with torch.no_grad():
        logits = torch.stack([torch.cat(t) for t in zip(*(net.eval().path_logits(b) for b in x))])
    labels = torch.cat(y)
    # the anytime order is by each path's top-1 on those same held-out images, best first
    top1 = [float((lg.argmax(1) == labels).double().mean()) for lg in logits]
    assert info.path_order["path_top1"] == pytest.approx(top1, abs=1e-12)
    assert info.order == sorted(range(len(top1)), key=lambda k: (-top1[k], k))
    order, macs = list(info.cascade.order), [step["macs"] for step in result["anytime"]]
    assert cascade["thresholds"] == pytest.approx(fit_thresholds(logits[order], torch.cat(y), macs, 0.01), abs=1e-5)


def test_retrain_reports_the_ood_set_and_the_cascade_it_fitted_in_eval_json(model):
    result = json.loads((model / "eval.json").read_text())
    assert result["ood"]["images"] == 60 and result["ood"]["data"] == "imagefolder/test"
    hist = result["ood"]["histograms"]["msp"]
    assert sum(hist["in"]) == result["images"] and sum(hist["out"]) == 60
    assert len(hist["edges"]) == len(hist["in"]) + 1
    _, info = load_ensemble(model)
    assert result["cascade"]["thresholds"] == list(info.cascade.thresholds)
    assert result["cascade"]["tolerance_points"] == 0.5


def _one_line(capsys, code, fragment):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("neas: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def test_bad_ood_and_cascade_input_is_one_line(model, tmp_path, capsys):
    (tmp_path / "empty" / "test" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "b").mkdir(parents=True)
    single = tmp_path / "single.safetensors"
    k1 = dataclasses.replace(TINY, num_paths=1)
    one = EnsembleArch(split=0, paths=(ARCH.paths[0],))
    save_ensemble(build_ensemble(k1, one, 10), single, data={"data": "digits", "data_dir": None})
    base = ["evaluate", "--device", "cpu", "--no-latency"]
    cases = [
        (["--checkpoint", str(model), "--ood-data", "imagefolder", "--ood-data-dir", str(tmp_path / "empty")], "empty"),
        (["--checkpoint", str(single), "--cascade"], "at least 2 paths"),
        (
            ["--checkpoint", str(model), "--ood-data", "imagefolder", "--ood-data-dir", str(tmp_path / "none")],
            "ood_data",
        ),
        (["--checkpoint", str(model), "--cascade-tolerance", "200"], "cascade_tolerance must be in [0, 100]"),
        (["--checkpoint", str(model), "--ood-data", "svhn2"], "ood_data"),
        (["--checkpoint", str(model), "--save-scores", str(tmp_path / "s.txt")], "must end in .npz"),
    ]
    for extra, fragment in cases:
        _one_line(capsys, main(base + extra), fragment)


def test_the_report_draws_risk_coverage_ood_histograms_and_the_cascade_curve(model, tmp_path):
    from neas.report.plots import plot_cascade, plot_ood, plot_risk_coverage

    result = json.loads((model / "eval.json").read_text())
    for plot in (plot_risk_coverage, plot_ood, plot_cascade):
        assert plot(result, tmp_path / f"{plot.__name__}.png").stat().st_size > 1000
        plain = {k: v for k, v in result.items() if k not in ("ood", "cascade", "ensemble")}
        assert plot({**plain, "ensemble": {"top1": 0.5}}, tmp_path / "none.png") is None


def test_ignored_or_contradictory_evaluate_and_export_options_are_refused_before_the_work(
    model, tmp_path, capsys, monkeypatch
):
    import neas.recipes.evaluate as recipe

    monkeypatch.setattr(recipe, "evaluate", lambda cfg: pytest.fail("evaluated despite a refused option"))
    base = ["evaluate", "--checkpoint", str(model), "--device", "cpu", "--no-latency"]
    scores, needs = str(tmp_path / "s.npz"), "is read only with"
    cases = [
        (["--ood-data-dir", str(tmp_path)], f"--ood-data-dir {needs} --ood-data"),  # fuzz §10
        (["--ood-split", "train"], f"--ood-split {needs} --ood-data"),  # fuzz §10
        (["--ood-download"], f"--ood-download {needs} --ood-data"),
        (["--cascade-tolerance", "3"], f"--cascade-tolerance {needs} --cascade"),  # fuzz §10
        (["--severities", "3"], f"--severities {needs} --corruptions"),
        (["--corruption-seed", "4"], f"--corruption-seed {needs} --corruptions"),
        (["--data", "digits", "--data-dir", "nope"], "reads no"),  # fuzz §13: digits is built in
        (["--ood-data", "digits", "--ood-data-dir", "nope"], "reads no"),
        (["--split", "train", "--cascade"], "--cascade fits on the held-out part of the training split"),  # audit 6
        (["--split", "train", "--temperature", "fit"], "--temperature fit fits on the held-out part"),  # audit 6
        (["--arch", "neas-s"], "--arch is for --official-checkpoint"),
        (["--json", scores, "--save-scores", scores], "--json and --save-scores are the same file"),  # fuzz §10
        (["--save-scores", str(tmp_path / "nodir" / "s.npz")], "its folder"),  # fuzz §11: after the whole evaluation
        (["--json", str(tmp_path / "nodir" / "e.json")], "its folder"),  # fuzz §11
    ]
    for extra, fragment in cases:
        _one_line(capsys, main(base + extra), fragment)
    assert not (tmp_path / "s.npz").exists()
    monkeypatch.undo()  # a stored digits dataset is checked once the model is read
    _one_line(capsys, main([*base, "--data-dir", str(tmp_path)]), "the model's dataset, digits, is built in")
    export = ["export", "--checkpoint", str(model), "--out", str(tmp_path / "m.safetensors")]
    _one_line(capsys, main([*export, "--format", "safetensors", "--opset", "12"]), "--opset 12 has no effect")
    _one_line(capsys, main([*export, "--format", "onnx", "--arch", "neas-s"]), "--arch is for --official-checkpoint")
    assert not (tmp_path / "m.safetensors").exists()


def test_top5_is_printed_only_with_more_than_five_classes():
    from neas.recipes.evaluate import format_result

    block = {"top1": 0.5, "top5": 1.0, "nll": 1.0, "ece": 0.1, "brier": 0.5}
    result = {"data": "d", "split": "test", "images": 10, "weights": "raw", "arch": {"paths": [[]]}}
    result |= {"ensemble": block, "path0": block, "macs": 1e6, "paper_flops": 2e6, "params": 1e5}
    few = format_result({**result, "per_class": {"classes": list("abcde")}})
    many = format_result({**result, "per_class": {"classes": list("abcdef")}})
    assert "top-5" not in few and "100.00%" not in few
    assert "top-5" in many and "100.00%" in many
