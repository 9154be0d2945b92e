import json
import os
import subprocess
import sys

import pytest
import torch

from neas.cli import main
from neas.config import from_dict
from neas.data import BatchLoader, holdout_split, load_dataset
from neas.recipes.search import SearchConfig, search
from neas.search.fitness import CandidateEvaluator
from neas.space import EnsembleArch
from neas.supernet.io import load_supernet

from ..helpers import Killed

BUDGET = "0.8M"


def cfg(supernet, out, **kw):
    base = dict(
        supernet=str(supernet),
        out=str(out),
        max_macs=BUDGET,
        population=12,
        parents=4,
        generations=4,
        mutations=4,
        crossovers=4,
        bn_batches=2,
        batch_size=64,
        device="cpu",
        seed=1,
    )
    return from_dict(SearchConfig, {**base, **kw})


@pytest.fixture(scope="module")
def evolution_run(trained_supernet, tmp_path_factory):
    return search(cfg(trained_supernet, tmp_path_factory.mktemp("s") / "evo"))


def test_outputs(evolution_run):
    arch = json.loads((evolution_run / "arch.json").read_text())
    assert arch["macs"] <= 800_000
    assert 0 < arch["supernet_acc"] <= 1
    assert len(arch["path_acc"]) == 2
    EnsembleArch.from_json(arch)
    gens = sorted(evolution_run.glob("generation_*.json"))
    assert len(gens) == 4
    members = [m for g in gens for m in json.loads(g.read_text())["members"]]
    assert all(m["macs"] <= 800_000 for m in members)
    keys = [json.dumps([m["split"], m["paths"]]) for m in members]
    assert len(keys) == len(set(keys))  # every candidate evaluated once
    assert {m["origin"] for m in members} >= {"random", "mutation"}
    best = max(m["ensemble_acc"] for m in members)
    assert arch["supernet_acc"] == best
    # `neas arch` reads the space stored in arch.json
    assert main(["arch", str(evolution_run / "arch.json"), "--json", "--num-classes", "10"]) == 0


def test_random_search_runs_as_many_evaluations(trained_supernet, evolution_run, tmp_path):
    # whether evolution beats random is a claim over seeds: test_evolution.py and docs/RESULTS.md
    evaluations = json.loads((evolution_run / "state.json").read_text())["evaluations"]
    rand = search(cfg(trained_supernet, tmp_path / "rand", strategy="random", evaluations=evaluations))
    evo_acc = json.loads((evolution_run / "arch.json").read_text())["supernet_acc"]
    rand_arch = json.loads((rand / "arch.json").read_text())
    assert rand_arch["evaluations"] == evaluations
    assert rand_arch["strategy"] == "random"
    assert 0 < rand_arch["supernet_acc"] <= 1
    assert 0 < evo_acc <= 1


def test_resume_after_a_crash_gives_the_same_result(trained_supernet, evolution_run, tmp_path, kill_after):
    import neas.rundir as rundir

    restore = kill_after(
        rundir,
        "write_json",
        when=lambda path, value, **kw: str(path).endswith("state.json") and value["generation"] == 1,
    )
    out = tmp_path / "evo"
    with pytest.raises(Killed):
        search(cfg(trained_supernet, out))
    restore()
    search(cfg(trained_supernet, out, resume=True))
    for name in ["arch.json"] + [f"generation_{g:02d}.json" for g in range(4)]:
        assert json.loads((out / name).read_text()) == json.loads((evolution_run / name).read_text()), name


def _evaluator(supernet_dir, reuse):
    model, info = load_supernet(supernet_dir)
    shrunk = info.shrunk
    full = load_dataset("digits", "train", 32)
    keep, held = holdout_split(full.labels, 0.1)
    bn = [x for x, _ in list(BatchLoader(full.subset(keep), 64, False).epoch(0))[:2]]
    val = list(BatchLoader(full.subset(held), 64, False).epoch(0))
    return CandidateEvaluator(model.eval(), bn, val, reuse_shared=reuse), shrunk, model.space


def test_shared_part_reuse_gives_identical_accuracies_and_memoises(trained_supernet):
    fast, shrunk, space = _evaluator(trained_supernet, True)
    slow, _, _ = _evaluator(trained_supernet, False)
    import random

    rng = random.Random(0)
    base = EnsembleArch.sample(space, rng, shrunk, split=2)
    archs = [
        base,
        *[a for a in (EnsembleArch.sample(space, rng, shrunk, split=2) for _ in range(30)) if a.shared == base.shared][
            :3
        ],
    ]
    archs += [EnsembleArch.sample(space, rng, shrunk) for _ in range(4)]
    got = fast.evaluate_many(archs + archs)
    want = [slow.evaluate(a) for a in archs]
    assert got[: len(archs)] == want
    assert got[len(archs) :] == want
    # each (prefix, layer) is computed once: at most the number of distinct non-skip path prefixes
    prefixes = {tuple(p[:j]) for a in archs for p in a.paths for j in range(1, len(p) + 1) if not p[j - 1].is_skip}
    assert fast.layers_computed == len(prefixes)
    naive = sum(1 for a in set(archs) for p in a.paths for op in p if not op.is_skip)
    assert fast.layers_computed < naive
    assert len(fast.memo) == len(set(archs))


@pytest.mark.slow
def test_distributed_search_equals_single_process(trained_supernet, evolution_run, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "neas",
        "search",
        "--supernet",
        str(trained_supernet),
        "--out",
        str(out),
        "--max-macs",
        BUDGET,
        "--population",
        "12",
        "--parents",
        "4",
        "--generations",
        "4",
        "--mutations",
        "4",
        "--crossovers",
        "4",
        "--bn-batches",
        "2",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--seed",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ["arch.json"] + [f"generation_{g:02d}.json" for g in range(4)]:
        a, b = json.loads((out / name).read_text()), json.loads((evolution_run / name).read_text())
        a.pop("supernet", None), b.pop("supernet", None)
        assert _close(a, b), name  # NLLs: summed in another thread order, so equal to ~1e-7


def _close(a, b, rel=1e-5) -> bool:
    """Equal JSON values, floats within ``rel`` (rounding both to a number of digits is no tolerance:
    two values 1e-9 apart round apart when a rounding boundary falls between them)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    return a == b


def test_impossible_budget_names_the_range(trained_supernet, tmp_path, capsys):
    code = main(["search", "--supernet", str(trained_supernet), "--out", str(tmp_path / "x"), "--max-macs", "10K"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no ensemble of the space meets max_macs=10000" in err
    assert "the cheapest has macs=" in err
    assert "(split=" in err  # it names the cheapest ensemble itself
    assert "most expensive" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--min-macs", "2M", "--max-macs", "1M"],
            "contradictory constraints: min_macs=2000000 is larger than max_macs=1000000",
        ),
        (
            ["--population", "4", "--parents", "10"],
            "population (4) must not be smaller than the number of parents (10)",
        ),
        (["--max-macs", "lots"], "cannot read 'lots' as an amount"),
        (["--strategy", "evolutoin"], "did you mean 'evolution'"),
    ],
)
def test_bad_options(trained_supernet, tmp_path, capsys, extra, message):
    code = main(["search", "--supernet", str(trained_supernet), "--out", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err


def test_missing_or_incomplete_supernet(tmp_path, capsys):
    code = main(["search", "--supernet", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "supernet: no such file or directory" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "state.json").write_text("{}")
    code = main(["search", "--supernet", str(tmp_path / "half"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "incomplete: no supernet.safetensors" in err


def test_latency_constraint_and_table(trained_supernet, tmp_path, capsys):
    assert (
        main(
            [
                "latency-table",
                "--space",
                "tiny",
                "--out",
                str(tmp_path / "lat.json"),
                "--repeats",
                "3",
                "--num-classes",
                "10",
            ]
        )
        == 0
    )
    table = json.loads((tmp_path / "lat.json").read_text())
    assert len(table["layers_ms"]) == 4
    assert table["layers_ms"][1]["skip"] == 0.0
    assert table["fixed_ms"] > 0
    out = search(
        cfg(trained_supernet, tmp_path / "lat", max_macs=None, max_latency_ms=1000.0, generations=1, population=4)
    )
    arch = json.loads((out / "arch.json").read_text())
    assert (out / "latency_table.json").is_file()
    assert 0 < arch["latency_ms"] <= 1000.0


def test_objective_nll_ranks_candidates_by_ensemble_nll(trained_supernet, evolution_run, tmp_path):
    top1 = json.loads((evolution_run / "arch.json").read_text())
    assert top1["objective"] == "top1"
    assert top1["candidates"][0]["ensemble_acc"] == max(c["ensemble_acc"] for c in top1["candidates"])
    run = search(cfg(trained_supernet, tmp_path / "nll", objective="nll", generations=2))
    arch = json.loads((run / "arch.json").read_text())
    nlls = [c["ensemble_nll"] for c in arch["candidates"]]
    assert arch["objective"] == "nll"
    assert nlls == sorted(nlls)
    assert len(nlls) == arch["evaluations"]
    assert arch["supernet_nll"] == min(nlls)
    assert all({"ensemble_acc", "ensemble_nll", "path_acc"} <= set(c) for c in arch["candidates"])
    members = [m for g in sorted(run.glob("generation_*.json")) for m in json.loads(g.read_text())["members"]]
    assert all(m["ensemble_nll"] > 0 for m in members)
    with pytest.raises(Exception, match="objective: unknown 'acc'"):
        cfg(trained_supernet, tmp_path / "x", objective="acc")


def test_objective_aurc_ranks_candidates_by_the_ensembles_area_under_the_risk_coverage_curve(
    trained_supernet, tmp_path
):
    run = search(cfg(trained_supernet, tmp_path / "aurc", objective="aurc", generations=2))
    arch = json.loads((run / "arch.json").read_text())
    aurcs = [c["ensemble_aurc"] for c in arch["candidates"]]
    assert arch["objective"] == "aurc"
    assert aurcs == sorted(aurcs) and 0 <= aurcs[0] < aurcs[-1] <= 1
    assert arch["supernet_aurc"] == min(aurcs)
    # a candidate's AURC, recomputed from the whole network's held-out predictions by its definition
    slow, shrunk, space = _evaluator(trained_supernet, False)
    candidate = EnsembleArch.sample(space, 3, shrunk)
    evaluation = slow.evaluate(candidate)  # leaves the BNs recalibrated for this candidate
    with torch.no_grad():
        mean = torch.cat([torch.stack(slow.supernet(x, candidate)).float().mean(0) for x, _ in slow.val_batches])
    labels = torch.cat([y for _, y in slow.val_batches])
    confidence = mean.double().softmax(1).max(1).values.numpy()
    wrong = (mean.argmax(1) != labels).numpy()
    n, area, accepted, errors = len(wrong), 0.0, 0, 0
    for value in sorted(set(confidence.tolist()), reverse=True):  # equal confidences accepted together
        take = confidence == value
        accepted, errors = accepted + int(take.sum()), errors + int(wrong[take].sum())
        area += errors / accepted * int(take.sum()) / n
    assert evaluation.ensemble_aurc == pytest.approx(area, abs=1e-9)
    assert evaluation.fitness("aurc") == -evaluation.ensemble_aurc


def test_a_given_latency_table_is_the_budgets_meaning(trained_supernet, tmp_path, capsys):
    from neas.cost.latency import LatencyTable
    from neas.supernet.io import read_supernet_info

    space = read_supernet_info(trained_supernet).space
    layers = [{str(op): (0.0 if op.is_skip else 1.0) for op in spec.ops} for spec in space.layers]
    table = LatencyTable(
        space.name, "phone", 1, space.input_size, 2.0, layers, 0.5, runtime="onnxruntime", overhead_ms=1.0
    )
    table.save(tmp_path / "phone.json")
    args = [
        "search",
        "--supernet",
        str(trained_supernet),
        "--latency-table",
        str(tmp_path / "phone.json"),
        "--device",
        "cpu",
    ]
    assert main([*args, "--out", str(tmp_path / "s"), "--max-latency-ms", "1"]) == 2
    err = capsys.readouterr().err
    import re

    found = re.search(
        r"on phone \(onnxruntime\) the fastest takes at least ([\d.]+) ms \(e\.g\. split=.*: ([\d.]+) ms\)", err
    )
    assert found, err
    assert found.group(1) == found.group(2)  # the named ensemble is the fastest (exact without a per-block term)
    assert float(found.group(1)) >= 2.0 + 2 * 0.5 + 1.0  # stem + 2 heads + the overhead, at least
    assert not (tmp_path / "s" / "latency_table.json").exists()
