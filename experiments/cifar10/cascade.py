"""The confidence-gated cascade on the CIFAR study's final NEAS ensembles (issue 28): a resumable driver.

    python experiments/cifar10/cascade.py run --commit     # every seed not yet in docs/results/cascade/
    python experiments/cifar10/cascade.py table            # the docs/RESULTS.md table from the summaries

For each seed of the study's `k2_diversity` pipelines, the searched arch (from its committed summary)
is retrained with the study's recipe (small, 8 epochs, batch 128) but with 10 % of the training split
held out, then `neas evaluate --cascade` fits the thresholds on that held-out part and reports the
cascade on the carved test split: top-1, mean MACs and mean latency per image against the full
ensemble. Each finished seed writes docs/results/cascade/seed<N>.json (and with --commit commits
it at once); a seed whose summary exists is skipped. One thread per process (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from plan import DATA, HERE, ROOT  # experiments/cifar10/plan.py

from neas.report.tables import markdown_table
from neas.runfiles import ARCH, EVAL, PipelineLayout
from neas.stats import ci95

RESULTS = ROOT / "docs" / "results" / "cascade"
RUNS = ROOT / "runs" / "cascade"
STUDY = ROOT / "docs" / "results" / "study"
SEEDS = (0, 1, 2)
TOLERANCES = (0.5, 0.0)  # points of top-1: the default, and none (top-1 at least the full ensemble's, held out)


def _neas(*args: str, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        command = shlex.split(os.environ.get("NEAS", "neas"))  # e.g. "python -m neas" from a fixed checkout
        subprocess.run([*command, *args], check=True, env=env, stdout=out, stderr=out)


def run_seed(seed: int) -> dict:
    study = json.loads((STUDY / f"k2_diversity_seed{seed}.json").read_text())
    folder = RUNS / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / ARCH
    arch.write_text(json.dumps(study["arch"]))
    retrain = PipelineLayout(folder).retrain
    if not (retrain / EVAL).exists():
        resume = ["--resume"] if retrain.exists() else []
        _neas(
            "retrain", "--arch", str(arch), "--space", str(HERE / "space.yaml"), "--data", "cifar10",
            "--data-dir", str(DATA), "--recipe", "small", "--epochs", "8", "--batch-size", "128",
            "--holdout", "0.1", "--seed", str(seed), "--device", "cpu", "--workers", "0", "--out", str(retrain),
            *resume, log=folder / "retrain.log",
        )  # fmt: skip
    cascades = {}
    for tolerance in TOLERANCES:
        result = folder / f"cascade_{tolerance:g}.json"
        _neas(
            "evaluate", "--checkpoint", str(retrain), "--cascade", "--cascade-tolerance", str(tolerance),
            "--device", "cpu", "--workers", "0", "--json", str(result), "--force", log=folder / "evaluate.log",
        )  # fmt: skip
        cascades[f"{tolerance:g}"] = json.loads(result.read_text())
    ev = cascades[f"{TOLERANCES[0]:g}"]
    return {
        "seed": seed,
        "arch": study["arch"],
        "cascades": {t: {k: v for k, v in e["cascade"].items() if k != "curve"} for t, e in cascades.items()},
        "curve": ev["cascade"]["curve"],
        "anytime": [{k: e[k] for k in ("paths", "top1", "macs", "latency_ms")} for e in ev["anytime"]],
        "ensemble_top1": ev["ensemble"]["top1"],
        "images": ev["images"],
        "latency_device": ev.get("latency_device"),
    }


def _commit(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    for _ in range(30):  # another git process may hold the index for a moment
        add = subprocess.run(["git", "add", rel], cwd=ROOT, capture_output=True)
        message = f"cascade study: {path.stem}"
        if (
            add.returncode == 0
            and not subprocess.run(["git", "commit", "-q", "-m", message, "--", rel], cwd=ROOT).returncode
        ):
            return
        time.sleep(2)
    print(f"could not commit {rel}", file=sys.stderr)


def table() -> str:
    """docs/RESULTS.md's cascade table (a line per seed and tolerance), then per tolerance the mean ± sd
    and t 95 % CI over seeds of the MACs and latency saved and of the top-1 change."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("seed*.json"))]
    if not rows:
        return "no results yet"
    header = ["seed", "tolerance (pp)", "full top-1", "cascade top-1", "Δ top-1 (pp)", "full MACs", "cascade mean MACs"]
    header += ["MACs saved", "full latency (ms)", "cascade mean latency (ms)", "stop at path 1"]
    cells, saved, faster, drop = [], {}, {}, {}
    for r in rows:
        for tolerance, c in r.get("cascades", {}).items():
            saved.setdefault(tolerance, []).append(1 - c["mean_macs"] / c["macs"])
            faster.setdefault(tolerance, []).append(1 - c["mean_latency_ms"] / c["latency_ms"])
            drop.setdefault(tolerance, []).append(100 * (c["top1"] - c["full_top1"]))
            cells.append(
                [
                    r["seed"],
                    tolerance,
                    f"{100 * c['full_top1']:.2f}",
                    f"{100 * c['top1']:.2f}",
                    f"{drop[tolerance][-1]:+.2f}",
                    f"{c['macs'] / 1e6:.3f}M",
                    f"{c['mean_macs'] / 1e6:.3f}M",
                    f"{100 * saved[tolerance][-1]:.1f} %",
                    f"{c['latency_ms']:.2f}",
                    f"{c['mean_latency_ms']:.2f}",
                    f"{100 * c['stop_fraction'][0]:.1f} %",
                ]
            )
    lines = [*markdown_table(header, cells), ""]
    for tolerance in saved:
        for name, xs in (("MACs saved (%)", saved), ("latency saved (%)", faster), ("Δ top-1 (pp)", drop)):
            values = np.asarray(xs[tolerance]) * (100 if name != "Δ top-1 (pp)" else 1)
            mean, sd, lo, hi = ci95(values)
            lines.append(
                f"- tolerance {tolerance} pp, {name}: {mean:.2f} ± {sd:.2f}, t 95 % CI [{lo:.2f}, {hi:.2f}] "
                f"over {len(values)} seeds"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "table"])
    parser.add_argument("--commit", action="store_true", help="commit each seed's summary when it finishes")
    args = parser.parse_args()
    if args.action == "table":
        print(table())
        return 0
    if not (DATA / "test").is_dir():
        shared = ROOT.parent / "shared" / "data" / "cifar10"
        _neas("carve-test", str(shared), "--out", str(DATA), "--test-fraction", "0.2", log=RUNS / "data.log")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        path = RESULTS / f"seed{seed}.json"
        if path.exists():
            continue
        path.write_text(json.dumps(run_seed(seed), indent=1) + "\n")
        print(f"seed {seed}: {path}", flush=True)
        if args.commit:
            _commit(path)
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
