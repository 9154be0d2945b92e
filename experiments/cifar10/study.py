"""The CIFAR-10 study of docs/RESULTS.md, rerun with seeds (issue 17): a resumable driver.

    python experiments/cifar10/study.py run --workers 2 --commit   # every unit not yet in docs/results/study/
    python experiments/cifar10/study.py status                     # what is done, running, waiting
    python experiments/cifar10/study.py tables                     # docs/results/study/tables.md from the summaries
    python experiments/cifar10/study.py latency                    # CPU latency of every final model (quiet machine)

Every unit (a `neas run` pipeline, an extra retraining seed, a deep ensemble) writes one small
summary JSON under docs/results/study/ when it finishes, and with --commit commits it at once,
so the study can be finished piecewise on fresh machines: a unit whose summary exists is
skipped. Run directories live under runs/study/ (not committed); a unit that needs another's
result (a retraining seed needs the searched arch) reads it from that unit's committed summary.
Every process uses one thread (OMP_NUM_THREADS=1); --workers processes run side by side.
Set NEAS to the `neas` executable to run (e.g. one installed from a fixed checkout, so edits to
the working tree do not reach running experiments).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml
from plan import (
    BUDGET,
    DATA,
    HERE,
    OLD_RANK,
    RESULTS,
    ROOT,
    SMOKE,
    pipeline_config,
    units,
)  # experiments/cifar10/plan.py

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


def _neas() -> list[str]:
    return [os.environ.get("NEAS", "neas")]


def _sh(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {log}")


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


def _summary(name: str) -> dict:
    """A finished unit's committed summary."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def _write(path: Path, text: str) -> Path:
    """Writes ``path`` atomically, and only if its content changes (another worker may read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def _config(name: str, data: dict) -> Path:
    return _write(RUNS / "configs" / f"{name}.yaml", yaml.safe_dump(data, sort_keys=False))


def _resumable(cmd: list[str], run: Path) -> list[str]:
    """``cmd``, resuming ``run`` when a neas command has started it."""
    return cmd + (["--resume"] if (run / "neas-run.json").is_file() else [])


def _combinations_after(supernet: Path) -> "int | None":
    rounds = sorted((supernet / "shrink").glob("round_*.json"))
    return json.loads(rounds[-1].read_text())["combinations_after"] if rounds else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_pipeline(name: str, unit: dict) -> dict:
    run = RUNS / name
    _sh(
        _resumable([*_neas(), "run", "--config", str(_config(name, unit["config"])), "--out", str(run)], run),
        RUNS / "logs" / f"{name}.log",
    )
    arch = json.loads((run / "search" / "arch.json").read_text())
    arch.pop("candidates", None)
    summary = {
        "supernet_acc": arch["supernet_acc"],
        "supernet_nll": arch.get("supernet_nll"),
        "evaluations": arch["evaluations"],
    }
    if (run / "search_random" / "arch.json").is_file():
        rnd = json.loads((run / "search_random" / "arch.json").read_text())
        summary["random_supernet_acc"] = rnd["supernet_acc"]
    return {
        "config": unit["config"],
        "search": summary,
        "arch": arch,
        "combinations_after": _combinations_after(run / "supernet"),
        "retrain_config": yaml.safe_load((run / "retrain" / "config.yaml").read_text()),
        "eval": _scores(json.loads((run / "retrain" / "eval.json").read_text())),
        "wall_s": {
            stage: _span(run / stage)
            for stage in ("supernet", "search", "search_random", "retrain")
            if (run / stage).is_dir()
        },
    }


def _span(path: Path) -> float:
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
    return round(max(times) - min(times), 1) if times else 0.0


def _arch_file(source: str) -> Path:
    """The searched arch of a finished pipeline, from its committed summary."""
    return _write(RUNS / "archs" / f"{source}.json", json.dumps(_summary(source)["arch"], indent=1) + "\n")


def _retrain_config(name: str, source: str, seed: int, **extra) -> Path:
    """The retraining settings of pipeline ``source`` with another seed, as a config file."""
    cfg = {
        k: v
        for k, v in _summary(source)["retrain_config"].items()
        if k not in ("out", "resume", "arch", "seed", "device", "workers")
    }
    cfg.update(seed=seed, device="cpu", workers=0, **extra)
    return _config(name, cfg)


def run_retrain(name: str, unit: dict) -> dict:
    config = _retrain_config(name, unit["source"], unit["retrain_seed"], arch=str(_arch_file(unit["source"])))
    run = RUNS / name
    if not (run / "eval.json").is_file():
        _sh(
            _resumable([*_neas(), "retrain", "--config", str(config), "--out", str(run)], run),
            RUNS / "logs" / f"{name}.log",
        )
    return {
        "source": unit["source"],
        "retrain_seed": unit["retrain_seed"],
        "eval": _scores(json.loads((run / "eval.json").read_text())),
        "wall_s": _span(run),
    }


def run_deep(name: str, unit: dict) -> dict:
    source = _summary(unit["source"])
    rt = source["retrain_config"]
    seed = unit.get("seed", 100 + source["config"]["seed"] * 10)  # the first copy's; the others follow it
    run = RUNS / name
    cmd = [
        *_neas(),
        "ablate",
        "deep-ensemble",
        "--arch",
        str(_arch_file(unit["source"])),
        "--copies",
        "2",
        "--data",
        rt["data"],
        "--data-dir",
        rt["data_dir"],
        "--recipe",
        rt["recipe"],
        "--epochs",
        str(rt["epochs"]),
        "--batch-size",
        str(rt["batch_size"]),
        "--seed",
        str(seed),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--out",
        str(run),
    ]
    _sh(cmd, RUNS / "logs" / f"{name}.log")
    record = json.loads((run / "ablate.json").read_text())
    return {
        "source": unit["source"],
        "seeds": [m["seed"] for m in record["members"]],
        "record": record,
        "wall_s": _span(run),
    }


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


def _supernet(cfg: dict) -> Path:
    """The K = 2 supernet of pipeline config ``cfg``, trained here with that pipeline's settings
    (so the same supernet: training is seeded) unless already trained with them. One worker at a
    time trains it (the rank and split units share it)."""
    sn_cfg = {**{k: cfg[k] for k in ("space", "data", "data_dir", "seed", "device")}, **cfg["supernet"]}
    name = f"rank_{cfg['supernet']['shrink']}_seed{cfg['seed']}"
    supernet = RUNS / name / "supernet"
    (RUNS / "claims").mkdir(parents=True, exist_ok=True)
    with open(RUNS / "claims" / f"{name}.supernet", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (supernet / "supernet.safetensors").is_file():
            trained = yaml.safe_load((supernet / "config.yaml").read_text())
            differ = [k for k, v in sn_cfg.items() if k in trained and trained[k] != v]
            if differ:
                raise RuntimeError(f"{supernet} was trained with other settings ({', '.join(differ)}); move it away")
        else:
            config = _config(f"{name}_supernet", sn_cfg)
            _sh(
                _resumable([*_neas(), "train-supernet", "--config", str(config), "--out", str(supernet)], supernet),
                RUNS / "logs" / f"{name}.log",
            )
    return supernet


def run_rank(name: str, unit: dict) -> dict:
    """Trains the supernet of one shrinking mode and seed (the settings of that pipeline, so the
    same supernet) and ranks the 30 ensembles of the ranking study with it."""
    cfg = pipeline_config(unit["mode"], 2, unit["seed"], BUDGET)
    supernet = _supernet(cfg)
    run = RUNS / name
    _sh(
        [
            *_neas(),
            "rank",
            "--supernet",
            str(supernet),
            *RANK_ARGS,
            "--scratch",
            str(_scratch_file()),
            "--device",
            "cpu",
            "--out",
            str(run / "rank"),
        ],
        RUNS / "logs" / f"{name}.log",
    )
    result = json.loads((run / "rank" / "rank.json").read_text())
    return {
        "mode": unit["mode"],
        "seed": unit["seed"],
        "supernet_config": yaml.safe_load((supernet / "config.yaml").read_text()),
        "rank": result["supernets"][str(supernet)],
        "scratch_acc": result["scratch_acc"],
        "scratch_reused": result["scratch_reused"],
        "supernet_sha256": _sha256(supernet / "supernet.safetensors"),
        "combinations_after": _combinations_after(supernet),
        "wall_s": {"supernet": _span(supernet), "rank": _span(run / "rank")},
    }


def _split_source(source: str) -> tuple[Path, Path]:
    """The committed arch of pipeline ``source`` beside its search's config, pointing at its
    (retrained) supernet: what `neas ablate split` needs to rerun that search unshared."""
    summary = _summary(source)
    cfg = summary["config"]
    supernet = _supernet(cfg)
    folder = RUNS / f"{source}_search"
    search = {
        **cfg["search"],
        "seed": cfg["seed"],
        "device": "cpu",
        "data_dir": cfg["data_dir"],
        "supernet": str(supernet),
    }
    _write(folder / "config.yaml", yaml.safe_dump(search, sort_keys=False))
    return _write(
        folder / "arch.json", json.dumps({**summary["arch"], "supernet": str(supernet)}, indent=1) + "\n"
    ), supernet


def run_ablate(name: str, unit: dict) -> dict:
    """`neas ablate homo-hetero` or `split` on a pipeline's searched ensemble, one retraining seed."""
    config = _retrain_config(name, unit["source"], unit["retrain_seed"], **({"epochs": 1} if SMOKE else {}))
    extra = {}
    if unit["which"] == "split":  # its equal-budget search needs the search's config and supernet beside the arch
        arch, supernet = _split_source(unit["source"])
        extra["supernet_sha256"] = _sha256(supernet / "supernet.safetensors")
    else:
        arch = _arch_file(unit["source"])
    run = RUNS / name
    _sh(
        [*_neas(), "ablate", unit["which"], "--config", str(config), "--arch", str(arch), "--out", str(run)],
        RUNS / "logs" / f"{name}.log",
    )
    return {
        "which": unit["which"],
        "source": unit["source"],
        "retrain_seed": unit["retrain_seed"],
        **extra,
        "record": json.loads((run / "ablate.json").read_text()),
        "wall_s": _span(run),
    }


RUNNERS = {"pipeline": run_pipeline, "retrain": run_retrain, "deep": run_deep, "rank": run_rank, "ablate": run_ablate}


def _done(name: str) -> bool:
    return (RESULTS / f"{name}.json").is_file()


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


def work(commit: bool) -> None:
    """Takes the next unit that is not done, not taken by another worker, and whose dependencies
    are done; runs it; writes (and commits) its summary; repeats until none is left."""
    claims = RUNS / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    all_units = units()
    failed = set()  # a unit that failed is left for the next run of the driver, not retried in a loop
    while True:
        pending = [n for n in all_units if not _done(n) and n not in failed]
        if not pending:
            return
        ready = [n for n in pending if all(_done(d) for d in all_units[n]["deps"])]
        took = None
        for name in ready:
            handle = open(claims / name, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            if _done(name):
                handle.close()
                continue
            took = (name, handle)
            break
        if took is None:
            if not any(all(_done(d) for d in all_units[n]["deps"]) for n in pending) and not _running(
                all_units, pending
            ):
                return
            time.sleep(30)
            continue
        name, handle = took
        unit = all_units[name]
        start = time.time()
        print(f"{time.strftime('%H:%M:%S')} start {name}", flush=True)
        try:
            result = RUNNERS[unit["kind"]](name, unit)
        except Exception as exc:  # noqa: BLE001 - a failed unit is reported and left for a rerun
            print(f"{time.strftime('%H:%M:%S')} FAILED {name}: {exc}", flush=True)
            failed.add(name)
            handle.close()
            time.sleep(5)
            continue
        summary = {
            "unit": name,
            "kind": unit["kind"],
            **result,
            "unit_wall_s": round(time.time() - start, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        os.replace(tmp, path)
        print(f"{time.strftime('%H:%M:%S')} done {name} ({(time.time() - start) / 60:.1f} min)", flush=True)
        if commit:
            _commit(path, f"study: {name} ({(time.time() - start) / 60:.0f} min)")
        handle.close()


def _running(all_units, pending) -> bool:
    """Whether another worker holds a claim (its unit will unblock others)."""
    for name in pending:
        path = RUNS / "claims" / name
        if not path.exists():
            continue
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False


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
    parser.add_argument("action", choices=("run", "status", "tables", "worker", "latency"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--commit", action="store_true", help="commit each summary as soon as it is written")
    args = parser.parse_args(argv)
    if args.action == "status":
        for name, unit in units().items():
            print(f"{'done   ' if _done(name) else 'pending'} {unit['kind']:<8} {name}")
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
    if not (DATA / "test").is_dir():
        _sh(
            [*_neas(), "carve-test", str(SHARED_CIFAR), "--out", str(DATA), "--test-fraction", "0.2"],
            RUNS / "logs" / "data.log",
        )
    if args.action == "worker":
        work(args.commit)
        return 0
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", *(["--commit"] if args.commit else [])])
        for _ in range(args.workers)
    ]
    return max(p.wait() for p in procs)


if __name__ == "__main__":
    sys.exit(main())
