"""The benchmarks' own correctness checks, at a size that runs in seconds."""

from benchmarks.bench_eval import candidate_evaluation, candidates_like_evolution
from benchmarks.bench_step import shared_once, supernet_vs_plain
from benchmarks.common import interleaved

from neas import SearchSpace

TINY = {"batch": 4, "imagenet_input": 64, "imagenet_batch": 2, "repeats": 1, "warmup": 0, "candidates": 6}


def test_interleaved_times_every_callable():
    calls = []
    t = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert set(t) == {"a", "b"}
    assert calls.count("a") == 4
    assert calls.count("b") == 4


def test_candidate_evaluation_accuracies_are_identical():
    for kind in ("shared", "evolution"):
        result = candidate_evaluation({**TINY, "candidates": 8}, kind=kind)
        assert result.extra["identical_accuracies"]
        assert result.extra["candidates"] == 8
        assert result.ours_s > 0
        assert result.baseline_s > 0


def test_evolution_like_candidates_share_parts():
    archs = candidates_like_evolution(SearchSpace.preset("cifar"), 12)
    assert len(set(archs)) == 12


def test_step_benchmarks_run():
    assert supernet_vs_plain("tiny", TINY).ratio > 0
    result = shared_once("tiny", TINY)
    assert {"full", "shared", "path0", "path1"} <= set(result.extra)


def test_cascade_onnx_benchmark_runs_and_stops_as_pytorch():
    from benchmarks.cascade_onnx import cascade_onnx

    result = cascade_onnx(TINY, images=16)
    assert result.extra["same_stops_as_pytorch"] and result.extra["images"] == 16
    assert result.ours_s > 0 and result.baseline_s > 0 and result.extra["multi_file_ms"] > 0
    assert result.extra["stop_fraction"] == [15 / 16, 1 / 16]  # the least confident image goes on
