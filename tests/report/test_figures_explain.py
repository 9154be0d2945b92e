"""The report's figures carry their sample size, binomial CIs and a chance line (issue 39)."""

import json

import pytest

from neas.report import html as report_html
from neas.report import plots
from neas.runfiles import METRICS, SHRINK_ROUNDS, PipelineLayout, round_file

from .test_explain import _eval


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plots draw, kept open instead of saved."""
    drawn = []

    def keep(fig, path):
        drawn.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _chance_lines(ax):
    return [line for line in ax.get_lines() if line.get_label().startswith("chance")]


def _result():
    record = _eval(top1=0.31, images=100)
    record["anytime"] = [
        {"paths": [0], "top1": 0.28, "nll": 1.5, "macs": 1e5},
        {"paths": [0, 1], "top1": 0.31, "nll": 1.4, "macs": 2e5},
    ]
    record["reliability"] = {
        name: {"bins": 15, "count": [0] * 6 + [40, 60] + [0] * 8, "confidence": [0.45] * 16, "accuracy": [0.3] * 16}
        for name in ("ensemble", "path0", "path1")
    }
    return record


def test_anytime_has_n_error_bars_and_a_chance_line(figures, tmp_path):
    plots.plot_anytime(_result(), tmp_path / "a.png")
    ax = figures[0].axes[0]
    assert "n = 100" in ax.get_title() and ax.get_ylim() == (0, 100)
    (chance,) = _chance_lines(ax)
    assert chance.get_ydata()[0] == pytest.approx(20)
    assert ax.containers  # the Wilson error bars


def test_confusion_and_per_class_figure(figures, tmp_path):
    assert plots.plot_confusion(_result(), tmp_path / "c.png")
    confusion, per_class = figures[0].axes[0], figures[0].axes[1]
    assert "n = 1000" in confusion.get_title()
    assert _chance_lines(per_class) and per_class.containers
    assert plots.plot_confusion({"ensemble": {"top1": 0.5}}, tmp_path / "none.png") is None


def test_reliability_shows_the_images_per_bin(figures, tmp_path):
    plots.plot_reliability(_result(), tmp_path / "r.png")
    texts = {t.get_text() for t in figures[0].axes[0].texts}
    assert {"n=40", "n=60"} <= texts and "n = 100" in figures[0].axes[0].get_title()


def test_the_two_losses_have_their_own_axes(figures, tmp_path):
    layout = PipelineLayout(tmp_path)
    for folder, line in (
        (layout.supernet, {"step": 1, "epoch": 0, "loss": 4.0, "ensemble_acc": 0.3, "combinations": 9}),
        (layout.retrain, {"step": 1, "epoch": 0, "loss": 1.1, "test_top1": 0.4}),
    ):
        folder.mkdir(parents=True)
        (folder / METRICS).write_text(json.dumps(line) + "\n")
    plots.plot_training(tmp_path, tmp_path / "t.png")
    supernet, retrain = figures[0].axes[0], figures[0].axes[1]
    assert [line.get_label() for line in supernet.get_lines()] == ["supernet loss"]
    assert [line.get_label() for line in retrain.get_lines()] == ["retrain loss"]
    assert "sum over K paths" in supernet.get_ylabel() and "label smoothing" in retrain.get_ylabel()


def test_the_shrinking_caption_names_the_marks_it_draws(figures, tmp_path):
    rounds = PipelineLayout(tmp_path).supernet / SHRINK_ROUNDS
    rounds.mkdir(parents=True)
    layer = {"layer": "L1", "ops": ["a", "b"], "S": [[1, 0.9], [0.9, 1]], "r": [1.0, 0.5]}
    layer["scores"] = [{"ops": ["a", "b"], "score": 1.0}, {"ops": ["a", "a"], "score": 2.0}]
    record = {"round": 0, "epoch": 1, "mode": "x", "combinations_before": 3, "combinations_after": 2}
    record |= {"layers": [layer], "dropped": [{"layer": "L1", "ops": ["a", "b"]}]}
    (rounds / round_file(0)).write_text(json.dumps(record))
    page = "".join(report_html._training(tmp_path, tmp_path))
    assert "red ×" in page and "red bars" not in page
    marks = [t.get_text() for ax in figures[-1].axes for t in ax.texts]
    assert "×" in marks
