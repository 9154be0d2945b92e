"""The report's header (issue 39): the data, the verdict with its CI, and flags that fire from records."""

import json

import pytest

from neas.records import ArchRecord, EvalRecord
from neas.report.explain import flags, header, wilson_ci
from neas.report.html import build_report
from neas.runfiles import CONFIG, EVAL, METRICS, REPORT, REPORT_PAGE, PipelineLayout


def _eval(top1=0.46, paths=(0.40, 0.42), images=1000, temperature_images=2000, **extra) -> dict:
    record = {
        "split": "test",
        "images": images,
        "ensemble": {"top1": top1, "top5": 1.0, "nll": 1.2, "ece": 0.05, "brier": 0.6},
        "temperature": {"temperature": 1.3, "images": temperature_images, "nll_before": 1.0, "nll_after": 0.9},
        "per_class": {"classes": ["cat", "dog", "fox", "owl", "yak"], "images": [200] * 5, "top1": [0.5] * 5},
        "confusion": {"matrix": [[100 if i == j else 25 for j in range(5)] for i in range(5)]},
        **extra,
    }
    for j, p in enumerate(paths):
        record[f"path{j}"] = {"top1": p, "top5": 1.0, "nll": 1.3, "ece": 0.06, "brier": 0.7}
    return record


def _arch(supernet_acc=0.47) -> dict:
    return {"split": 1, "paths": [["k3e3"], ["k5e3"]], "supernet_acc": supernet_acc, "space": {"input_size": 32}}


def _run(tmp_path, steps=3000, **eval_kw):
    """A run-like folder: config.yaml, the retraining's eval.json and metric lines."""
    run = tmp_path / "run"
    retrain = PipelineLayout(run).retrain
    retrain.mkdir(parents=True)
    (run / CONFIG).write_text("data: cifar10\ndata_dir: /data/cifar\n")
    (retrain / EVAL).write_text(json.dumps(_eval(**eval_kw)))
    lines = [{"step": steps // 2 * (e + 1), "epoch": e, "loss": 1.0, "test_top1": 0.4} for e in range(2)]
    (retrain / METRICS).write_text("".join(json.dumps(m) + "\n" for m in lines))
    return run


def _flags(run, arch=None, **eval_kw):
    record = EvalRecord.from_json(_eval(**eval_kw), "eval")
    return {f.name for f in flags(run, ArchRecord.from_json(arch or _arch(), "arch"), record)}


def test_wilson_interval():
    low, high = wilson_ci(31, 100)
    assert low == pytest.approx(0.2278, abs=1e-4) and high == pytest.approx(0.4063, abs=1e-4)
    assert wilson_ci(0, 10)[0] == 0 and wilson_ci(10, 10)[1] == pytest.approx(1) and wilson_ci(0, 0) == (0, 1)


def test_a_healthy_run_raises_no_flag(tmp_path):
    assert _flags(_run(tmp_path)) == set()


def test_ensemble_below_its_best_path_is_flagged(tmp_path):
    assert _flags(_run(tmp_path), top1=0.46, paths=(0.51, 0.40)) == {"ensemble_below_path"}


def test_held_out_far_above_test_is_flagged(tmp_path):
    run = _run(tmp_path)
    assert _flags(run, _arch(0.49), top1=0.31, paths=(0.30, 0.29), images=100) == {"held_out_above_test"}
    # 8 points above, within the test's CI on 100 images: not flagged
    assert _flags(run, _arch(0.39), top1=0.31, paths=(0.30, 0.29), images=100) == set()


def test_a_short_retraining_is_flagged(tmp_path):
    assert _flags(_run(tmp_path, steps=32)) == {"short_retrain"}
    assert _flags(_run(tmp_path / "b", steps=300)) == set()


def test_a_temperature_fitted_on_few_images_is_flagged(tmp_path):
    assert _flags(_run(tmp_path), temperature_images=30) == {"few_temperature_images"}
    assert _flags(_run(tmp_path / "b"), temperature_images=500) == set()


def test_the_header_names_the_data_the_verdict_with_its_ci_and_the_flags(tmp_path):
    run = _run(tmp_path, steps=32)
    record = EvalRecord.from_json(_eval(top1=0.31, images=100), "eval")
    text = "".join(header(run, ArchRecord.from_json(_arch(), "arch"), record))
    assert "cifar10" in text and "5 classes: cat, dog, fox, owl, yak" in text
    assert "test: 100" in text and "input 32 x 32" in text and "resized once to 32 x 32" in text
    assert "held out of train (temperature, anytime order): 2000" in text
    assert "31.0 %" in text and "95 % CI 22.8 % – 40.6 %" in text and "n = 100" in text and "chance 20.0 %" in text
    assert "data-flag='short_retrain'" in text and "⚠" in text


def test_the_header_counts_the_training_images_and_says_when_the_held_out_part_fitted_a_cascade(tmp_path):
    run = _run(tmp_path)
    cascade = {"order": [1, 0], "thresholds": [0.9], "exit": "accuracy", "top1": 0.45, "mean_macs": 1e6}
    record = EvalRecord.from_json(_eval(train_images=12000, cascade=cascade), "eval")
    text = "".join(header(run, ArchRecord.from_json(_arch(), "arch"), record))
    assert "images: train: 12000; test: 1000; held out of train (temperature, anytime order, cascade): 2000" in text


def test_the_report_page_starts_with_the_header(tmp_path):
    run = _run(tmp_path, steps=32, top1=0.46, paths=(0.51, 0.40))
    page = (build_report(run).parent / REPORT_PAGE).read_text()
    assert page.index("<h2>Data</h2>") < page.index("<h2>Result</h2>")
    assert "data-flag='ensemble_below_path'" in page and "data-flag='short_retrain'" in page
    assert (run / REPORT).is_dir()


def test_a_similarity_that_barely_varies_is_said_beside_the_shrinking_figures():
    from neas.report.html import _similarity_note

    narrow = [{"layers": [{"S": [[1.0, 0.985], [0.985, 1.0]]}, {"S": [[1.0, 0.99], [0.99, 1.0]]}]}]
    assert "S lies within [0.985, 1.000] in every layer and round" in _similarity_note(narrow)
    assert _similarity_note([{"layers": [{"S": [[1.0, 0.6], [0.6, 1.0]]}]}]) == ""


@pytest.mark.parametrize("n", range(1, 400))
def test_the_wilson_interval_holds_the_proportion_itself_at_every_count(n):
    """At 0 and n of n the formula's bound can miss p by a rounding error (10 of 10: 1 - 1e-16), and a
    figure's error bar then has a negative length, which matplotlib refuses (the report crashed)."""
    for k in (0, n // 3, n):
        low, high = wilson_ci(k, n)
        assert low <= k / n <= high
