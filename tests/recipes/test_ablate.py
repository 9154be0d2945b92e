import json

import pytest
import torch
import yaml

from neas.cli import main
from neas.config import from_dict
from neas.cost import cost_table
from neas.ensemble import build_ensemble
from neas.errors import NeasError
from neas.recipes import ablate
from neas.recipes.retrain import RetrainConfig
from neas.recipes.run import RunConfig, run_pipeline
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace

from ..helpers import tiny_supernet_section

PIPELINE = {
    "data": "digits",
    "seed": 1,
    "device": "cpu",
    "supernet": tiny_supernet_section(epochs=3),
    "search": {
        "max_macs": "0.9M",
        "population": 6,
        "parents": 2,
        "generations": 3,
        "mutations": 2,
        "crossovers": 2,
        "bn_batches": 1,
    },
    "compare_random": True,
    "retrain": {"epochs": 1, "batch_size": 64, "eval_every": 1},
}
RETRAIN = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--compile", "off"]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    """The tiny space with split points from 0 (no sharing) to 4."""
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SearchSpace.preset("tiny").to_yaml().replace("split:\n- 1\n", "split:\n- 0\n"))
    assert SearchSpace.resolve(str(path)).split == (0, 4)
    return path


@pytest.fixture(scope="module")
def config_file(space_file):
    path = space_file.parent / "run.yaml"
    path.write_text(yaml.safe_dump({**PIPELINE, "space": str(space_file)}))
    return path


@pytest.fixture(scope="module")
def finished(config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "k2"
    run_pipeline(from_dict(RunConfig, {**yaml.safe_load(config_file.read_text()), "out": str(out)}))
    return out


def test_mirror_and_unshare(tiny):
    arch = EnsembleArch(2, [["k3e3", "k5e6", "k3e6", "skip"], ["k3e3", "k5e6", "k5e3", "k3e3"]])
    homo = ablate.mirror(arch, 1)
    assert homo.paths == (arch.paths[1],) * 2
    assert homo.split == 2
    assert not homo.distinct
    flat = ablate.unshare(arch)
    assert flat.split == 0
    assert flat.paths == arch.paths
    for a in (homo, flat):
        assert EnsembleArch.from_json(json.loads(json.dumps(a.to_json()))) == a  # "distinct": false survives JSON
    assert "distinct" not in arch.to_json()
    with pytest.raises(NeasError, match="path 2 does not exist"):
        ablate.mirror(arch, 2)
    shared = EnsembleArch(4, [arch.paths[0]] * 2)
    with pytest.raises(NeasError, match="share every layer"):
        ablate.homo_hetero(shared, RetrainConfig(space="tiny"), "unused")
    with pytest.raises(NeasError, match="repeats an op"):  # the search space's rule still holds by default
        EnsembleArch(2, homo.paths)
    with pytest.raises(NeasError, match="no shrunk space holds"):
        homo.validate(tiny, ShrunkSpace.full(tiny))
    homo.validate(tiny)  # buildable in the space, just not searchable
    # the cost table counts a mirrored or unshared ensemble like any other: against the FLOP counter
    from torch.utils.flop_counter import FlopCounterMode

    wide = tiny.__class__.from_dict({**tiny.to_dict(), "split": [0, 4]})
    for a, space in ((homo, tiny), (flat, wide)):
        net = build_ensemble(space, a, 10).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.randn(1, 3, 32, 32))
        assert cost_table(space, 10).cost(a).macs == counter.get_total_flops() // 2


def test_homo_hetero_cli(space_file, tmp_path, capsys):
    arch_file = tmp_path / "arch.json"
    EnsembleArch(2, [["k3e3", "k3e6", "k3e3", "skip"], ["k3e3", "k3e6", "k5e3", "k3e6"]]).save(
        arch_file, space=SearchSpace.resolve(str(space_file)).to_dict()
    )
    out = tmp_path / "hh"
    assert main(["ablate", "homo-hetero", "--arch", str(arch_file), "--out", str(out), *RETRAIN]) == 0
    record = json.loads((out / "ablate.json").read_text())
    variants = record["variants"]
    assert list(variants) == ["hetero", "homo_path1", "homo_path2"]
    searched = EnsembleArch.load(arch_file)
    assert EnsembleArch.from_json(variants["hetero"]["arch"]) == searched
    for k in range(2):
        homo = EnsembleArch.from_json(variants[f"homo_path{k + 1}"]["arch"])
        assert homo.paths == (searched.paths[k],) * 2
        ev = json.loads((out / f"homo_path{k + 1}" / "eval.json").read_text())
        assert variants[f"homo_path{k + 1}"]["top1"] == ev["ensemble"]["top1"]
    assert "| hetero |" in capsys.readouterr().out
    div = variants["hetero"]["diversity"]
    assert 0 <= div["disagreement"] <= 1
    assert max(variants["hetero"]["path_top1"]) <= div["oracle_top1"] <= 1
    # finished variants are never retrained
    import neas.recipes.ablate as mod

    before = (out / "hetero" / "model.safetensors").stat().st_mtime_ns
    assert main(["ablate", "homo-hetero", "--arch", str(arch_file), "--out", str(out), *RETRAIN]) == 0
    assert (out / "hetero" / "model.safetensors").stat().st_mtime_ns == before
    assert json.loads((out / "ablate.json").read_text()) == record
    # another ablation's directory is refused, nothing is overwritten
    ablate.mirror(searched, 1).save(tmp_path / "other.json", space=json.loads(arch_file.read_text())["space"])
    with pytest.raises(NeasError, match="belongs to another ablation"):
        mod.homo_hetero(str(tmp_path / "other.json"), from_dict(RetrainConfig, {"data": "digits", "epochs": 1}), out)
    assert EnsembleArch.load(out / "hetero.arch.json") == searched


def test_split_ablation_with_equal_budget_search(finished, tmp_path):
    arch_file = finished / "search" / "arch.json"
    searched = EnsembleArch.load(arch_file)
    if searched.split == 0:
        searched = EnsembleArch(2, [list(searched.paths[0][:2]) + list(p[2:]) for p in searched.paths])
        data = json.loads(arch_file.read_text())
        arch_file = tmp_path / "search" / "arch.json"
        arch_file.parent.mkdir()
        arch_file.write_text(json.dumps({**data, **searched.to_json()}))
        (arch_file.parent / "config.yaml").write_text((finished / "search" / "config.yaml").read_text())
    base = from_dict(
        RetrainConfig, {"data": "digits", "epochs": 1, "batch_size": 64, "device": "cpu", "compile": "off"}
    )
    record = ablate.split_ablation(str(arch_file), base, tmp_path / "split")
    v = record["variants"]
    assert list(v) == ["shared", "no_sharing_same_ops", "no_sharing_searched"]
    assert v["no_sharing_same_ops"]["split"] == 0
    assert v["no_sharing_same_ops"]["arch"]["paths"] == v["shared"]["arch"]["paths"]
    assert v["no_sharing_same_ops"]["macs"] > v["shared"]["macs"]  # sharing saves the shared layers' K-1 copies
    assert v["no_sharing_searched"]["split"] == 0
    assert v["no_sharing_searched"]["macs"] <= 900_000
    # the equal-budget search really searched only unshared ensembles, under the same budget
    for g in sorted((tmp_path / "split" / "search_no_sharing").glob("generation_*.json")):
        for m in json.loads(g.read_text())["members"]:
            assert m["split"] == 0
            assert m["macs"] <= 900_000


def test_split_needs_shared_layers_and_a_valid_range(finished, tmp_path, capsys):
    arch = EnsembleArch.load(finished / "search" / "arch.json")
    flat = ablate.unshare(arch) if arch.split else arch
    path = tmp_path / "flat.json"
    path.write_text(
        json.dumps({**flat.to_json(), "space": json.loads((finished / "search" / "arch.json").read_text())["space"]})
    )
    assert main(["ablate", "split", "--arch", str(path), "--out", str(tmp_path / "s"), *RETRAIN]) == 2
    assert "shares no layers" in capsys.readouterr().err
    assert (
        main(["search", "--supernet", str(finished / "supernet"), "--out", str(tmp_path / "bad"), "--split", "5"]) == 2
    )
    assert "outside the supernet space's split range [0, 4]" in capsys.readouterr().err


def test_search_curve(finished, tmp_path):
    record = ablate.search_ablation([str(finished)], tmp_path / "curve", top=3)
    r = record["runs"][str(finished)]
    evo = r["evolution"]
    assert evo["evaluations"] == json.loads((finished / "search" / "arch.json").read_text())["evaluations"]
    assert all(a <= b for a, b in zip(evo["best"], evo["best"][1:]))  # best-so-far never drops
    assert all(t <= b + 1e-12 for t, b in zip(evo["top_mean"], evo["best"]))  # a mean of equal values may round up
    assert evo["best"][-1] == json.loads((finished / "search" / "arch.json").read_text())["supernet_acc"]
    gens = sorted((finished / "search").glob("generation_*.json"))
    last = [m["ensemble_acc"] for m in json.loads(gens[-1].read_text())["members"]]
    assert evo["last_generation_mean"] == pytest.approx(sum(last) / len(last))
    assert r["equal_evaluations"] == min(evo["evaluations"], r["random"]["evaluations"])
    assert (tmp_path / "curve" / "search_curve.png").stat().st_size > 5000
    with pytest.raises(NeasError, match="no search_random"):
        ablate.search_ablation([str(tmp_path)], tmp_path / "x")


def test_paths_ablation_reuses_and_runs(config_file, finished, tmp_path, capsys):
    out = tmp_path / "paths"
    assert (
        main(
            [
                "ablate",
                "paths",
                "--config",
                str(config_file),
                "--paths",
                "3",
                "--reuse",
                f"2={finished}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "ablate.json").read_text())
    assert list(record["runs"]) == ["2", "3"]
    k3 = record["runs"]["3"]
    assert len(k3["path_top1"]) == 3
    assert k3["macs"] <= 900_000
    assert SearchSpace.resolve(str(out / "space_k3.yaml")).num_paths == 3
    assert record["runs"]["2"]["run"] == str(finished)
    capsys.readouterr()
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(config_file.read_text()), "seed": 9}))
    assert (
        main(
            [
                "ablate",
                "paths",
                "--config",
                str(other),
                "--paths",
                "2",
                "--reuse",
                f"2={finished}",
                "--out",
                str(tmp_path / "p2"),
            ]
        )
        == 2
    )
    assert "differs from the given one in seed" in capsys.readouterr().err
    assert (
        main(["ablate", "paths", "--config", str(config_file), "--reuse", "two=x", "--out", str(tmp_path / "p3")]) == 2
    )
