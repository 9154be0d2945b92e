"""Benchmark: four independent retrainings through :func:`neas.executor.run_jobs`' local executor,
two at once (``--max-parallel 2``) against one after another, one thread each (issue 29).

    python -m benchmarks.bench_executor                 # ~1 minute on 2 CPU cores
    python -m benchmarks.bench_executor --epochs 5 --jobs 4

Each job is ``neas retrain`` of one tiny-space ensemble on digits (seeds 0..3) in its own run
directory. Every job runs one thread on both sides (``NeasCommand(threads=1)``, what
``--threads-per-job`` gives), so the ratio measures running jobs side by side, not a change of
thread count.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from neas.executor import Job, NeasCommand, run_jobs
from neas.runfiles import EVAL
from neas.space import EnsembleArch, SearchSpace

__all__ = ["parallel_retrains"]


def _jobs(home: Path, arch_file: Path, count: int, epochs: int) -> list[Job]:
    jobs = []
    for seed in range(count):
        out = home / f"retrain{seed}"
        argv = ["retrain", "--arch", arch_file, "--data", "digits", "--device", "cpu", "--out", out]
        argv += ["--epochs", epochs, "--eval-every", epochs, "--batch-size", 64, "--seed", seed]
        jobs.append(Job(f"retrain{seed}", argv, out, EVAL))
    return jobs


def _timed(home: Path, arch_file: Path, count: int, epochs: int, max_parallel: int) -> float:
    """Seconds for ``count`` retrainings, ``max_parallel`` at once, one thread each."""
    jobs = _jobs(home, arch_file, count, epochs)
    start = time.perf_counter()
    command = NeasCommand(threads=1)  # one thread per job on both sides
    results = run_jobs(jobs, "local", max_parallel, log_dir=home / "jobs", progress=False, command=command)
    assert all(r.status == "done" for r in results), results
    return time.perf_counter() - start


def parallel_retrains(count: int = 4, epochs: int = 3) -> dict:
    """Wall seconds one after another, two at once, and their ratio."""
    space = SearchSpace.preset("tiny")
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        home = Path(tmp)
        arch_file = home / "arch.json"
        EnsembleArch.sample(space, 5).save(arch_file, space=space.to_dict())
        sequential = _timed(home / "sequential", arch_file, count, epochs, 1)
        parallel = _timed(home / "parallel", arch_file, count, epochs, 2)
    return {"jobs": count, "epochs": epochs, "sequential_s": sequential, "parallel_s": parallel}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_executor")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    r = parallel_retrains(args.jobs, args.epochs)
    print(
        f"executor, {r['jobs']} retrains ({r['epochs']} epochs, digits, 1 thread each): one after another "
        f"{r['sequential_s']:.1f} s, --max-parallel 2 {r['parallel_s']:.1f} s, "
        f"ratio {r['sequential_s'] / r['parallel_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
