"""K = 1 (a single network searched with the same machinery) and the deep-ensemble baseline
(issue 17): the rows every ensemble-search claim must beat."""

import json

import numpy as np
import pytest
import torch
import yaml

from neas.cli import main
from neas.config import from_dict
from neas.ensemble import build_ensemble
from neas.ensemble.io import load_ensemble, save_ensemble
from neas.errors import NeasError
from neas.recipes.run import RunConfig, run_pipeline
from neas.shrink.score import diversity_scores, quality_scores
from neas.shrink.statistics import LayerStats
from neas.space import EnsembleArch, SearchSpace

from ..helpers import tiny_supernet_section


def _k1_space(tmp_path):
    data = {**SearchSpace.preset("tiny").to_dict(), "num_paths": 1, "name": "tiny1"}
    (tmp_path / "tiny1.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "tiny1.yaml"


def test_a_single_network_space_ignores_the_split_range():
    space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "num_paths": 1, "split": [1, 3]})
    assert space.split == (0, 0)
    assert space.num_paths == 1
    assert space.size() == np.prod([len(spec.ops) for spec in space.layers])  # every op sequence once
    with pytest.raises(NeasError, match="num_paths must be at least 1"):
        SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "num_paths": 0})


def test_quality_shrinking_is_the_dpp_score_with_identity_similarity():
    rng = np.random.default_rng(0)
    space = SearchSpace.preset("tiny")
    ops = space.layers[1].ops
    n = len(ops)
    a = rng.normal(size=(n, n))
    stats = LayerStats(2, ops, np.eye(n), np.exp(rng.uniform(0, 2, n)), np.zeros((n, n)), np.ones(n), 1.0)
    combos = list(space.combinations(2))
    quality = quality_scores(stats, combos)
    assert quality == pytest.approx(diversity_scores(stats, combos))  # S = I
    pos = {op: i for i, op in enumerate(ops)}
    assert quality == pytest.approx([np.prod([stats.r[pos[o]] ** 2 for o in c]) for c in combos])
    similar = LayerStats(2, ops, a @ a.T / n + np.eye(n), stats.r, stats.pair_counts, stats.op_counts, 0.0)
    assert diversity_scores(similar, combos) != pytest.approx(quality)  # the similarity matters there


def test_the_single_network_path_of_an_ensemble_is_a_canonical_network(tmp_path):
    space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "num_paths": 3})
    for seed in range(4):
        net = build_ensemble(space, EnsembleArch.sample(space, seed), 10).eval()
        one = net.select([1])
        assert one.arch.split == 0
        assert one.space.num_paths == 1
        save_ensemble(one, tmp_path / "one.safetensors")
        loaded, _ = load_ensemble(tmp_path / "one.safetensors")  # its keys are those of a fresh one-path network
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(loaded(x), net.path_logits(x)[1], atol=1e-5)


def test_k1_runs_end_to_end_and_refuses_diversity_shrinking(tmp_path, capsys):
    space = _k1_space(tmp_path)
    cfg = from_dict(
        RunConfig,
        {
            "space": str(space),
            "data": "digits",
            "seed": 1,
            "device": "cpu",
            "out": str(tmp_path / "k1"),
            "supernet": tiny_supernet_section(epochs=2, shrink="quality"),
            "search": {
                "max_macs": "0.4M",
                "population": 6,
                "parents": 2,
                "generations": 2,
                "mutations": 2,
                "crossovers": 2,
                "bn_batches": 1,
            },
            "retrain": {"epochs": 1, "batch_size": 64, "holdout": 0.1},
        },
    )
    summary = run_pipeline(cfg)
    arch = json.loads((tmp_path / "k1" / "search" / "arch.json").read_text())
    assert len(arch["paths"]) == 1
    assert arch["split"] == 0
    assert summary["macs"] <= 400_000
    result = json.loads((tmp_path / "k1" / "retrain" / "eval.json").read_text())
    assert result["ensemble"]["top1"] == result["path0"]["top1"]
    assert len(result["anytime"]) == 1
    assert (
        main(
            ["train-supernet", "--space", str(space), "--out", str(tmp_path / "d"), "--epochs", "1", "--device", "cpu"]
        )
        == 2
    )
    assert "diversity compares pairs of paths" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_deep_ensemble_averages_independently_trained_copies(tmp_path, capsys):
    space = SearchSpace.from_yaml(_k1_space(tmp_path))
    arch = EnsembleArch.sample(space, 3)
    arch.save(tmp_path / "k1.json", space=space.to_dict())
    out = tmp_path / "deep"
    argv = [
        "ablate",
        "deep-ensemble",
        "--arch",
        str(tmp_path / "k1.json"),
        "--copies",
        "2",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads((out / "ablate.json").read_text())
    assert [m["seed"] for m in record["members"]] == [5, 6]
    assert record["copies"] == 2
    one, _ = load_ensemble(out / "copy0")
    two, _ = load_ensemble(out / "copy1")
    assert not torch.equal(one.classifiers[0].weight, two.classifiers[0].weight)  # independent initialisations
    from neas.cost import count_cost

    assert record["macs"] == 2 * count_cost(space, arch, 10).macs
    assert 0 <= record["diversity"]["disagreement"] <= 1
    assert record["ensemble"]["top1"] >= 0
    assert main(argv) == 0  # finished copies are reused, not retrained
    assert "deep ensemble" in capsys.readouterr().out


def test_deep_ensemble_copies_as_local_jobs_equal_those_trained_in_process(tmp_path, monkeypatch):
    """The copies, two at once as local subprocesses (one thread each, as the suite runs), give the
    numbers of the default executor: in this process, one after another."""
    space = SearchSpace.from_yaml(_k1_space(tmp_path))
    EnsembleArch.sample(space, 3).save(tmp_path / "k1.json", space=space.to_dict())
    argv = ["ablate", "deep-ensemble", "--arch", str(tmp_path / "k1.json"), "--data", "digits", "--epochs", "1"]
    argv += ["--batch-size", "64", "--device", "cpu", "--compile", "off"]
    assert main([*argv, "--out", str(tmp_path / "debug")]) == 0
    assert main([*argv, "--out", str(tmp_path / "local"), "--executor", "local", "--max-parallel", "2"]) == 0
    sequential, parallel = (json.loads((tmp_path / d / "ablate.json").read_text()) for d in ("debug", "local"))
    for record in (sequential, parallel):
        del record["latency_ms"]  # measured, not computed
    assert parallel == sequential
    assert len(list((tmp_path / "local" / "jobs").glob("*/*_log.err"))) == 2  # each copy in its own process
    assert main([*argv, "--out", str(tmp_path / "x"), "--max-parallel", "0"]) == 2
    assert not (tmp_path / "x").exists()
