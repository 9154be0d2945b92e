"""The CIFAR-10 study of docs/RESULTS.md (issues 17 and 29), run through the product.

    python experiments/cifar10/study.py run --max-parallel 2 --commit   # every command, then collect
    python experiments/cifar10/study.py collect --commit                # summaries of what has finished
    python experiments/cifar10/study.py status                          # which summaries are committed
    python experiments/cifar10/study.py tables                          # docs/results/study/tables.md
    python experiments/cifar10/study.py latency                         # CPU latency of every final model

The study is a handful of `neas` commands (:func:`commands`, printed by ``run --dry-run``):

- ``neas compare`` of experiments/cifar10/k2_diversity.yaml: the rows neas (diversity shrinking),
  quality, accuracy, none, single (K = 1) and deep (2 copies of a K = 1 network searched at half the
  budget), 3 pipeline seeds x 3 retraining seeds, its jobs spread over ``--max-parallel`` processes;
- ``neas rank`` of each seed's four supernets (the compare's neas/quality/accuracy/none runs) on the
  30 ensembles of the ranking study, whose from-scratch scores are reused (``--scratch``);
- ``neas compare --rows neas`` of the same config with K = 3 and K = 5 paths (seed 0, 3 retraining seeds);
- ``neas ablate homo-hetero`` and ``neas ablate split`` of the seed-0 NEAS search, 3 retraining seeds.

Each command resumes where it stopped and skips finished jobs, so ``run`` continues after a kill.
``collect`` turns the finished run directories into the per-unit summaries under
docs/results/study/ that tables.py reads (the names of plan.py's units), skipping those already
there, and with --commit commits each at once: the study can be finished piecewise on fresh
machines. Run directories live under runs/study/ (not committed). Every process uses one thread
(OMP_NUM_THREADS=1). Set NEAS to the `neas` executable to run (e.g. one installed from a fixed
checkout, so edits to the working tree do not reach running experiments).

The committed summaries of 2026-11 were made by this driver's first version, which ran the same
units one after another; its deep ensembles' copies were seeded 100 + 10 s (+ 1000 r), neas
compare's are seeded 2 s (+ 1000 r), the only difference in what is computed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from plan import BUDGET, DATA, HERE, OLD_RANK, RESULTS, ROOT, SEEDS, SHRINK_MODES, pipeline_config, units

from neas.fields import load_yaml
from neas.io import write_text
from neas.runfiles import (
    ABLATE,
    ARCH,
    COMPARE,
    CONFIG,
    EVAL,
    RANK,
    SHRINK_ROUNDS,
    SUMMARY,
    SUPERNET,
    PipelineLayout,
)

RUNS = Path(os.environ.get("STUDY_RUNS", ROOT / "runs" / "study"))
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
SCRATCH = RESULTS / "inputs" / "rank_scratch.json"
RANK_ARGS = [
    "--num-archs",
    "30",
    "--from-space",
    "full",
    "--scratch-epochs",
    "3",
    "--scratch-batch-size",
    "128",
    "--seed",
    "0",
]
RETRAINS = 3  # trainings of every searched network: the pipeline's own and two more
ROW = {"diversity": "neas", "quality": "quality", "accuracy": "accuracy", "none": "none"}  # shrink mode -> row
COMPARE_RUNS = RUNS / "compare"  # the study's `neas compare` directory


def _neas() -> list[str]:
    return [os.environ.get("NEAS", "neas")]


def _sh(cmd: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _config(name: str, data: dict) -> Path:
    return _write(RUNS / "configs" / f"{name}.yaml", yaml.safe_dump(data, sort_keys=False))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _retrain_config(name: str, run: Path, seed: int) -> Path:
    """The retraining settings of the pipeline in ``run`` with another seed, as a config file."""
    cfg = load_yaml(PipelineLayout(run).retrain / CONFIG)
    cfg = {k: v for k, v in cfg.items() if k not in ("out", "resume", "arch", "seed", "device", "workers")}
    return _config(name, {**cfg, "seed": seed, "device": "cpu", "workers": 0})


def commands(max_parallel: int) -> list[tuple[str, list[str], Path, Callable | None]]:
    """Every command of the study in order: (name, argv, the file that exists once it finished, what writes
    its config first: an ablation's, from the seed-0 search's retraining settings)."""
    executor = ["--executor", "local", "--max-parallel", str(max_parallel)]
    seeds = ["--seeds", str(len(SEEDS)), "--retrain-seeds", str(RETRAINS)]
    main = _config("k2", pipeline_config("diversity", 2, SEEDS[0], BUDGET))
    rows = ",".join([ROW[m] for m in SHRINK_MODES] + ["single", "deep"])
    argv = ["compare", "--config", str(main), *seeds, "--rows", rows, *executor, "--out", str(COMPARE_RUNS)]
    out = [("compare", argv, COMPARE_RUNS / COMPARE, None)]
    for k in (3, 5):
        config = _config(f"k{k}", pipeline_config("diversity", k, 0, BUDGET))
        argv = ["compare", "--config", str(config), "--seeds", "1", "--retrain-seeds", str(RETRAINS), "--rows", "neas"]
        out.append((f"k{k}", [*argv, *executor, "--out", str(RUNS / f"k{k}")], RUNS / f"k{k}" / COMPARE, None))
    for seed in SEEDS:
        supernets = [str(PipelineLayout(COMPARE_RUNS / f"{ROW[m]}-seed{seed}").supernet) for m in SHRINK_MODES]
        rank = RUNS / f"rank-seed{seed}"
        argv = ["rank", "--supernet", *supernets, *RANK_ARGS, "--scratch", str(SCRATCH), "--device", "cpu"]
        out.append((f"rank-seed{seed}", [*argv, *executor, "--out", str(rank)], rank / RANK, None))
    source = COMPARE_RUNS / f"neas-seed{SEEDS[0]}"
    for which in ("homo-hetero", "split"):
        for r in range(RETRAINS):
            name = f"{which.replace('-', '')}_seed0_retrain{r}"
            config = RUNS / "configs" / f"{name}.yaml"
            argv = ["ablate", which, "--config", str(config), "--arch", str(PipelineLayout(source).search / ARCH)]
            write = functools.partial(_retrain_config, name, source, 1000 * r)
            out.append((name, [*argv, "--out", str(RUNS / name)], RUNS / name / ABLATE, write))
    return out


def run(max_parallel: int, commit: bool) -> int:
    """Runs every command not finished yet (each resumes and skips its finished jobs), collecting after each."""
    if not (DATA / "test").is_dir():
        carve = [*_neas(), "carve-test", str(SHARED_CIFAR), "--out", str(DATA), "--test-fraction", "0.2"]
        if _sh(carve, RUNS / "logs" / "data.log") != 0:
            return 1
    _scratch_file()
    failed = 0
    for name, argv, done, write_config in commands(max_parallel):
        if done.is_file():
            continue
        if write_config is not None:
            write_config()
        print(f"{time.strftime('%H:%M:%S')} neas {' '.join(argv[:2])} -> {name}", flush=True)
        if _sh([*_neas(), *argv], RUNS / "logs" / f"{name}.log") != 0:
            print(f"{time.strftime('%H:%M:%S')} FAILED {name}: see {RUNS / 'logs' / f'{name}.log'}", flush=True)
            failed += 1
        collect(commit)
    return 1 if failed else 0


def _write(path: Path, text: str) -> Path:
    """Writes ``path`` atomically, and only if its content changes (another worker may read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)  # neas.io's atomic, fsynced write
    return path


def _scores(ev: dict) -> dict:
    keep = ("top1", "top5", "nll", "ece", "brier")
    k = len(ev.get("anytime", [])) or sum(1 for key in ev if key.startswith("path") and key[4:].isdigit())
    return {
        "ensemble": {x: ev["ensemble"][x] for x in keep},
        "paths": [{x: ev[f"path{j}"][x] for x in keep} for j in range(k)],
        "diversity": ev["diversity"],
        "macs": ev["macs"],
        "paper_flops": ev["paper_flops"],
        "params": ev["params"],
        "latency_ms": ev.get("latency_ms"),
        "images": ev["images"],
    }


def _combinations_after(supernet: Path) -> int | None:
    rounds = sorted((supernet / SHRINK_ROUNDS).glob("round_*.json"))
    return json.loads(rounds[-1].read_text())["combinations_after"] if rounds else None


def _span(path: Path) -> float:
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
    return round(max(times) - min(times), 1) if times else 0.0


def _scratch_file() -> Path:
    """``neas rank``'s scratch.json for the 30 ensembles of the old ranking study, whose
    from-scratch scores did not depend on the BN bug: the ensembles are drawn exactly as
    ``neas rank --seed 0 --from-space full`` draws them (the sampler is unchanged since; drawn
    with the code of 2e1594e, which made the old study, they are the same 30), the scores are
    docs/results/before_fix/rank.json's."""
    if SCRATCH.is_file():
        return SCRATCH
    from neas.space import EnsembleArch, SearchSpace

    old = json.loads(OLD_RANK.read_text())
    space = SearchSpace.resolve(str(HERE / "space.yaml"))
    rng, archs = random.Random("0:rank"), []
    while len(archs) < old["archs"]:
        arch = EnsembleArch.sample(space, rng)
        if arch not in archs:
            archs.append(arch)
    record = {
        "source": "docs/results/before_fix/rank.json (neas rank " + " ".join(RANK_ARGS) + ", 2026-11-27)",
        "recipe": {
            "epochs": 3,
            "batch_size": 128,
            "seed": 0,
            "data": "cifar10",
            "holdout": 0.1,
            "space": json.loads(json.dumps(space.to_dict())),
        },
        "ensembles": [{"arch": a.to_json(), "top1": t} for a, t in zip(archs, old["scratch_acc"])],
    }
    return _write(SCRATCH, json.dumps(record, indent=1) + "\n")


def _pipeline(run: Path) -> dict:
    """A finished `neas run` directory's summary (the fields the tables read)."""
    arch = json.loads((PipelineLayout(run).search / ARCH).read_text())
    arch.pop("candidates", None)
    search = {k: arch.get(k) for k in ("supernet_acc", "supernet_nll", "evaluations")}
    if (PipelineLayout(run).search_random / ARCH).is_file():
        search["random_supernet_acc"] = json.loads((PipelineLayout(run).search_random / ARCH).read_text())[
            "supernet_acc"
        ]
    return {
        "config": load_yaml(run / CONFIG),
        "search": search,
        "arch": arch,
        "combinations_after": _combinations_after(PipelineLayout(run).supernet),
        "retrain_config": load_yaml(PipelineLayout(run).retrain / CONFIG),
        "eval": _scores(json.loads((PipelineLayout(run).retrain / EVAL).read_text())),
        "wall_s": {s: _span(run / s) for s in ("supernet", "search", "search_random", "retrain") if (run / s).is_dir()},
    }


def _retrain(run: Path, source: str) -> dict:
    config = load_yaml(run / CONFIG)
    eval_ = _scores(json.loads((run / EVAL).read_text()))
    return {"source": source, "retrain_seed": config["seed"], "eval": eval_, "wall_s": _span(run)}


def _deep(run: Path, source: str) -> dict:
    record = json.loads((run / ABLATE).read_text())
    return {"source": source, "seeds": [m["seed"] for m in record["members"]], "record": record, "wall_s": _span(run)}


def _rank(run: Path, mode: str, seed: int) -> dict:
    supernet = PipelineLayout(COMPARE_RUNS / f"{ROW[mode]}-seed{seed}").supernet
    result = json.loads((run / RANK).read_text())
    return {
        "mode": mode,
        "seed": seed,
        "supernet_config": load_yaml(supernet / CONFIG),
        "rank": result["supernets"][str(supernet)],
        "scratch_acc": result["scratch_acc"],
        "scratch_reused": result["scratch_reused"],
        "supernet_sha256": _sha256(supernet / SUPERNET),
        "combinations_after": _combinations_after(supernet),
        "wall_s": {"supernet": _span(supernet), "rank": _span(run)},
    }


def _ablate(run: Path, which: str, r: int) -> dict:
    record = json.loads((run / ABLATE).read_text())
    return {
        "which": which,
        "source": "k2_diversity_seed0",
        "retrain_seed": 1000 * r,
        "record": record,
        "wall_s": _span(run),
    }


def sources() -> dict:
    """unit name (plan.py) -> (its kind, the file that exists once it finished, what makes its summary)."""
    out = {}
    for seed in SEEDS:
        rows = {f"k2_{m}": ROW[m] for m in SHRINK_MODES} | {"k1": "single"}
        for unit, row in rows.items():
            run = COMPARE_RUNS / f"{row}-seed{seed}"
            out[f"{unit}_seed{seed}"] = ("pipeline", run / SUMMARY, lambda run=run: _pipeline(run))
            for r in range(1, RETRAINS):
                again = COMPARE_RUNS / f"{row}-seed{seed}-retrain{r}"
                out[f"{unit}_seed{seed}_retrain{r}"] = (
                    "retrain",
                    again / EVAL,
                    lambda a=again, u=f"{unit}_seed{seed}": _retrain(a, u),
                )
        half = COMPARE_RUNS / f"deep-k1-seed{seed}"
        out[f"k1half_seed{seed}"] = ("pipeline", half / SUMMARY, lambda run=half: _pipeline(run))
        for r in range(RETRAINS):
            deep = COMPARE_RUNS / (f"deep-seed{seed}" + (f"-retrain{r}" if r else ""))
            name = f"deep_seed{seed}" + (f"_retrain{r}" if r else "")
            out[name] = ("deep", deep / ABLATE, lambda d=deep, s=seed: _deep(d, f"k1half_seed{s}"))
        for mode in SHRINK_MODES:
            rank = RUNS / f"rank-seed{seed}"
            out[f"rank_{mode}_seed{seed}"] = (
                "rank",
                rank / RANK,
                lambda rk=rank, m=mode, s=seed: _rank(rk, m, s),
            )
    for k in (3, 5):
        run = RUNS / f"k{k}" / "neas-seed0"
        out[f"k{k}_diversity_seed0"] = ("pipeline", run / SUMMARY, lambda run=run: _pipeline(run))
        for r in range(1, RETRAINS):
            again = RUNS / f"k{k}" / f"neas-seed0-retrain{r}"
            out[f"k{k}_diversity_seed0_retrain{r}"] = (
                "retrain",
                again / EVAL,
                lambda a=again, k=k: _retrain(a, f"k{k}_diversity_seed0"),
            )
    for which in ("homo-hetero", "split"):
        for r in range(RETRAINS):
            name = f"{which.replace('-', '')}_seed0_retrain{r}"
            out[name] = ("ablate", RUNS / name / ABLATE, lambda n=name, w=which, r=r: _ablate(RUNS / n, w, r))
    return out


def collect(commit: bool) -> list[str]:
    """Writes (and commits) the summary of every finished unit that has none yet; returns their names."""
    written = []
    for name, (kind, done, summarise) in sources().items():
        path = RESULTS / f"{name}.json"
        if path.is_file() or not done.is_file():
            continue
        summary = {"unit": name, "kind": kind, **summarise(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        wall = summary["wall_s"]
        summary["unit_wall_s"] = round(sum(wall.values()) if isinstance(wall, dict) else wall, 1)
        _write(path, json.dumps(summary, indent=1) + "\n")
        written.append(name)
        if commit:
            _commit(path, f"study: {name}")
    return written


def _commit(path: Path, message: str) -> None:
    rel = str(path.relative_to(ROOT))
    for attempt in range(20):  # another git process (a person committing) may hold the index
        add = subprocess.run(["git", "add", rel], cwd=ROOT, capture_output=True, text=True)
        done = (
            add.returncode == 0
            and subprocess.run(
                ["git", "commit", "-q", "-m", message, "--", rel], cwd=ROOT, capture_output=True, text=True
            ).returncode
            == 0
        )
        if done:
            return
        time.sleep(3 + attempt)
    print(f"could not commit {rel}; it is written, commit it by hand", file=sys.stderr)


LATENCY = RESULTS / "inputs" / "latency.json"


def measure_latency(repeats: int = 60) -> dict:
    """Every finished pipeline's final network and every deep ensemble, timed on a quiet machine:
    batch 1, one thread, channels_last, all models interleaved (neas.cost.runtime), twice, so the
    test-retest agreement is on record. The main table's latency column reads this file."""
    import torch

    from neas.cost.runtime import interleaved_ms, runner
    from neas.ensemble.model import DeepEnsemble, build_ensemble
    from neas.space import EnsembleArch, SearchSpace

    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {}
    for path in sorted(RESULTS.glob("*.json")):
        unit = json.loads(path.read_text())
        if (
            unit.get("kind") not in ("pipeline", "deep") or "_retrain" in path.stem
        ):  # a deep retrain has its source's arch
            continue
        source = unit if unit["kind"] == "pipeline" else json.loads((RESULTS / f"{unit['source']}.json").read_text())
        space = SearchSpace.from_dict(source["arch"]["space"])
        arch = EnsembleArch.from_json(source["arch"])
        if unit["kind"] == "pipeline":
            models[path.stem] = build_ensemble(space, arch, 10)
        else:
            models[path.stem] = DeepEnsemble([build_ensemble(space, arch, 10) for _ in range(2)])
    if not models:
        raise SystemExit(f"no finished pipeline or deep ensemble in {RESULTS} to time")
    size = next(iter(models.values())).space.input_size
    x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    runs = {name: runner(m.to(memory_format=torch.channels_last).eval(), x) for name, m in models.items()}
    first = interleaved_ms(runs, repeats)
    second = interleaved_ms(runs, repeats)
    from scipy import stats

    record = {
        "how": f"batch 1, 1 thread, channels_last, torch {torch.__version__}, {repeats} interleaved repeats, median; "
        "twice",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "test_retest_kendall_tau": float(
            stats.kendalltau([first[n] for n in runs], [second[n] for n in runs]).statistic
        ),
        "latency_ms": {n: {"ms": round(first[n], 4), "retest_ms": round(second[n], 4)} for n in runs},
    }
    _write(LATENCY, json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="study.py")
    parser.add_argument("action", choices=("run", "collect", "status", "tables", "latency"))
    parser.add_argument("--max-parallel", type=int, default=2, help="jobs at once (each one thread)")
    parser.add_argument("--commit", action="store_true", help="commit each summary as soon as it is written")
    parser.add_argument("--dry-run", action="store_true", help="with run: print the commands")
    args = parser.parse_args(argv)
    if args.action == "status":
        for name, unit in units().items():
            print(f"{'done   ' if (RESULTS / f'{name}.json').is_file() else 'pending'} {unit['kind']:<8} {name}")
        return 0
    if args.action == "latency":  # run on a quiet machine (no study, no tests beside it)
        record = measure_latency()
        print(
            f"{len(record['latency_ms'])} models timed; test-retest Kendall tau "
            f"{record['test_retest_kendall_tau']:.3f} -> {LATENCY}"
        )
        return 0
    if args.action == "tables":  # tables.py's own command; another folder's numbers never reach docs/RESULTS.md
        default = RESULTS == ROOT / "docs" / "results" / "study"
        return subprocess.call([sys.executable, str(HERE / "tables.py"), *([] if default else [str(RESULTS)])])
    if args.action == "collect":
        print("\n".join(collect(args.commit)) or "nothing new to collect")
        return 0
    if args.dry_run:
        for _, argv, _, _ in commands(args.max_parallel):
            print("neas " + " ".join(argv))
        return 0
    return run(args.max_parallel, args.commit)


if __name__ == "__main__":
    sys.exit(main())
