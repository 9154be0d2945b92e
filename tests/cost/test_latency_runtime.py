"""Latency for the runtime you deploy on (issue 18): the overhead fit, the fastest ensemble,
and tables measured in PyTorch and ONNX Runtime."""

import random

import numpy as np
import pytest

import neas.ensemble.latency as latency
from neas.cli import main
from neas.cost.latency import LatencyTable
from neas.cost.runtime import interleaved_ms, runner
from neas.ensemble.latency import Timing, fit_overhead, measure_latency_table, validate_table
from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace


def test_the_overhead_fit_recovers_synthetic_terms():
    rng = np.random.default_rng(0)
    pieces = rng.uniform(1, 5, 20)
    blocks = rng.integers(4, 15, 20)
    measured = 0.8 * pieces + 0.4 + 0.07 * blocks
    scale, overhead, per_block, record = fit_overhead(pieces.tolist(), blocks.tolist(), measured.tolist())
    assert scale == pytest.approx(0.8)
    assert overhead == pytest.approx(0.4)
    assert per_block == pytest.approx(0.07)
    assert record["residual_ms_sd"] < 1e-9
    assert record["networks"] == 20
    noisy = measured + rng.normal(0, 0.01, 20)
    scale, overhead, per_block, _ = fit_overhead(pieces.tolist(), blocks.tolist(), noisy.tolist())
    assert scale == pytest.approx(0.8, abs=0.02)
    assert overhead == pytest.approx(0.4, abs=0.1)
    assert per_block == pytest.approx(0.07, abs=0.01)
    scale, overhead, per_block, _ = fit_overhead([1.0, 2.0, 3.0], [4, 5, 7], [1.5, 2.6, 3.8])  # too few for a scale
    assert scale == 1.0


def test_the_overhead_fit_never_predicts_below_zero():
    """Timings where the unconstrained fit's intercept is negative (a CI machine under load once
    produced such a table, and an impossible budget of 0.0001 ms then looked feasible)."""
    pieces = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    blocks = np.array([4, 9, 6, 12, 8, 14])
    measured = 1.2 * pieces - 0.5 + np.array([0.0, 0.02, -0.01, 0.01, 0.0, -0.02])
    unconstrained = np.linalg.lstsq(np.stack([np.ones(6), blocks, pieces], 1), measured, rcond=None)[0]
    assert unconstrained[0] < 0 or unconstrained[1] < 0  # the data do ask for a negative term
    scale, overhead, per_block, _ = fit_overhead(pieces.tolist(), blocks.tolist(), measured.tolist())
    assert scale > 0
    assert overhead >= 0
    assert per_block >= 0
    assert min(scale * p + overhead + per_block * b for p, b in zip([0.001], [1])) > 0


def _table(space):
    rng = random.Random(0)
    layers = [{str(op): (0.0 if op.is_skip else rng.uniform(0.1, 1.0)) for op in spec.ops} for spec in space.layers]
    return LatencyTable(
        space.name, "cpu", 1, space.input_size, 0.5, layers, 0.3, overhead_ms=0.2, per_block_ms=0.05, scale=0.9
    )


def test_predictions_add_the_fitted_overhead_and_the_fastest_ensemble_is_fastest():
    space = SearchSpace.preset("tiny")
    table = _table(space)
    arch = EnsembleArch.sample(space, 3)
    pieces, blocks = table.pieces_ms(arch)
    assert table.latency_ms(arch) == pytest.approx(0.9 * pieces + 0.2 + 0.05 * blocks)
    assert blocks == 1 + sum(not o.is_skip for o in arch.shared) + sum(
        sum(not o.is_skip for o in arch.private(k)) + 1 for k in range(2)
    )
    shrunk = ShrunkSpace.full(space)
    fastest = table.fastest(shrunk)
    lo, hi = table.bounds(shrunk)
    samples = [EnsembleArch.sample(space, random.Random(i), shrunk) for i in range(300)]
    assert all(table.latency_ms(fastest) <= table.latency_ms(a) + 1e-9 for a in samples)
    assert lo <= table.latency_ms(fastest)
    assert all(lo - 1e-9 <= table.latency_ms(a) <= hi + 1e-9 for a in samples)


def test_validation_errors_are_against_the_mean_of_both_passes_beside_their_own_drift(monkeypatch):
    """A machine that runs the retest 20 % slower than the test: a prediction equal to the mean of
    the passes has no error, and each single pass and the drift between them are reported."""
    space = SearchSpace.preset("tiny")
    table = _table(space)
    passes = iter([1.1, 0.9])
    monkeypatch.setattr(
        latency,
        "time_ensembles",
        lambda sp, archs, *a, **k: [f * table.latency_ms(arch) for f in [next(passes)] for arch in archs],
    )
    report = validate_table(table, space, 10, "cpu", 6)
    assert report["mape_pct"] == pytest.approx(0, abs=1e-9)
    assert report["bias_pct"] == pytest.approx(0, abs=1e-9)
    assert report["kendall_tau"] == pytest.approx(1)
    assert report["test_retest_tau"] == pytest.approx(1)
    archs = [EnsembleArch.from_json(r["arch"]) for r in report["records"]]
    truth = sorted(table.latency_ms(a) for a in archs)
    archs = sorted(archs, key=table.latency_ms)
    swapped = [*truth[:4], truth[5], truth[4]]  # the retest ranks the two slowest the other way round
    ranked = latency.validation_report(table, archs, truth, swapped)
    assert ranked["kendall_tau"] == pytest.approx(1)
    assert ranked["against_each_pass"][1]["kendall_tau"] < 1
    assert ranked["test_retest_tau"] == pytest.approx(ranked["against_each_pass"][1]["kendall_tau"])
    with pytest.raises(ValueError, match="at least 2"):
        latency.validation_report(table, archs[:1], truth[:1], truth[:1])
    assert report["test_retest_bias_pct"] == pytest.approx(100 * (0.9 / 1.1 - 1))
    assert report["test_retest_mape_pct"] == pytest.approx(100 * (1 - 0.9 / 1.1))
    first, second = report["against_each_pass"]
    assert first["bias_pct"] == pytest.approx(100 * (1 / 1.1 - 1))
    assert second["bias_pct"] == pytest.approx(100 * (1 / 0.9 - 1))


def test_validation_holds_out_the_networks_the_overhead_was_fitted_on(monkeypatch):
    """A table fitted on exactly the ensembles validation would draw first: it must validate on
    others, and refuse when the space has no others left."""
    space = SearchSpace.preset("tiny")
    table = _table(space)
    monkeypatch.setattr(
        latency, "time_ensembles", lambda sp, archs, *a, **k: [table.latency_ms(arch) for arch in archs]
    )
    drawn = latency._random_archs(space, 6, seed=20_000 + 1)
    table.fit = {"networks": 6, "archs": [a.to_json() for a in drawn]}
    report = validate_table(table, space, 10, "cpu", 6)
    validated = {EnsembleArch.from_json(r["arch"]) for r in report["records"]}
    assert len(validated) == 6
    assert not validated & set(drawn)
    assert report["held_out_fit_networks"] == 6
    few = drawn[:3]
    monkeypatch.setattr(EnsembleArch, "sample", staticmethod(lambda sp, rng, *a: few[rng.randrange(3)]))
    table.fit = {"networks": 2, "archs": [a.to_json() for a in few[:2]]}
    with pytest.raises(NeasError, match="validate: 'tiny' has fewer than 2 ensembles besides the 2"):
        validate_table(table, space, 10, "cpu", 6)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_tables_are_measured_in_either_runtime(runtime):
    space = SearchSpace.preset("tiny")
    table = measure_latency_table(space, 10, "cpu", Timing(repeats=2, warmup=1, runtime=runtime), fit_networks=3)
    assert table.runtime == runtime
    assert table.fit["networks"] == len(table.fit["archs"]) == 3
    assert all(v > 0 for entry in table.layers_ms for op, v in entry.items() if op != "skip")
    assert table.head_ms > 0
    report = validate_table(table, space, 10, "cpu", 3, repeats=2)
    assert report["ensembles"] == 3
    assert len(report["records"]) == 3
    assert report["mape_pct"] >= 0
    assert LatencyTable(**table.to_json()) == table


def test_fit_networks_are_timed_in_the_same_rounds_as_the_pieces(monkeypatch):
    calls, timed = [], latency.interleaved_ms
    monkeypatch.setattr(
        latency, "interleaved_ms", lambda runs, *a, **k: calls.append(sorted(runs)) or timed(runs, *a, **k)
    )
    table = measure_latency_table(SearchSpace.preset("tiny"), 10, "cpu", Timing(repeats=2, warmup=1), fit_networks=4)
    assert len(calls) == 1, "pieces and fit networks must be timed in one interleaved pass"
    assert sum(name.startswith("net") for name in calls[0]) == 4
    assert table.fit["networks"] == 4


def test_interleaved_timing_runs_everything_alike():
    calls = []
    got = interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=4, warmup=1)
    assert set(got) == {"a", "b"}
    assert calls.count("a") == calls.count("b") == 5
    with pytest.raises(NeasError, match="runtime: unknown 'tensorrt'"):
        runner(None, None, "tensorrt")


def test_latency_table_cli_refuses_an_unknown_runtime(tmp_path, capsys):
    assert main(["latency-table", "--space", "tiny", "--out", str(tmp_path / "l.json"), "--runtime", "onnx"]) == 2
    assert "did you mean 'onnxruntime'" in capsys.readouterr().err
    assert not (tmp_path / "l.json").exists()
    for flag in ("--fit-networks", "--validate"):
        assert main(["latency-table", "--space", "tiny", "--out", str(tmp_path / "l.json"), flag, "1"]) == 2
        assert "1 network is too few" in capsys.readouterr().err
        assert not (tmp_path / "l.json").exists()
