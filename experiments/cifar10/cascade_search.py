"""Cascade-aware search on CIFAR-10 at equal mean MACs (issue 37 item 7): a resumable driver.

    python experiments/cifar10/cascade_search.py run --commit   # neas compare --rows cascade, 3 seeds
    python experiments/cifar10/cascade_search.py collect --commit  # summaries of finished seeds
    python experiments/cifar10/cascade_search.py table --write  # docs/RESULTS.md §10 from the summaries

``run`` is ``neas compare --rows cascade`` of experiments/cifar10/k2_cascade.yaml (the study's K = 2
diversity pipeline, 1.5M MACs, without the random-search comparison) for pipeline seeds 0, 1, 2: the
search holds the *cascade's mean MACs per image* to 1.5M (static MACs free up to the space's 2.35M), the
retraining holds out 10 % of the training split to fit the winner's cascade, and the cascade is scored on
the carved 10 000-image test split. The single network and the deep ensemble it is judged against are the
study's committed runs of the same seeds (docs/results/study/k1_seed<s>.json and deep_seed<s>.json, their
own retraining, r = 0: one training per row and seed on both sides): their settings match (same data
split, space, supernet, search and retraining recipe, static budget 1.5M); the cascade row trains on 36 000
images instead of 40 000 (its held-out part), a handicap stated with the result.

Each finished seed writes docs/results/cascade_search/seed<s>.json (with --commit, committed at once while
the comparison goes on); ``neas compare`` skips finished jobs, so ``run`` resumes after a kill. One thread per
job (``--threads-per-job 1``), two jobs side by side. Set NEAS to the `neas` command of a fixed checkout
(e.g. ``PYTHONPATH=../study-code/src python -m neas``) so edits to this tree do not reach running jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cascade import _commit  # experiments/cifar10/cascade.py
from plan import DATA, HERE, ROOT

from neas.io import write_text
from neas.report.tables import markdown_table
from neas.runfiles import ARCH, CONFIG, EVAL, SUMMARY, PipelineLayout
from neas.stats import ci95, paired_difference

RESULTS = ROOT / "docs" / "results" / "cascade_search"
RUNS = ROOT / "runs" / "cascade_search"
STUDY = ROOT / "docs" / "results" / "study"
RESULTS_MD = ROOT / "docs" / "RESULTS.md"
SEEDS = (0, 1, 2)
ROWS = {"single": "k1_seed{}", "deep": "deep_seed{}"}  # the study's units the cascade is judged against
METRICS = {"top1": ("top-1 (pp)", 100, True), "nll": ("NLL", 1, False), "ece": ("ECE (pp)", 100, False)}


def _neas() -> list[str]:
    return shlex.split(os.environ.get("NEAS", "neas"))


def _config() -> Path:
    """k2_cascade.yaml with absolute paths (the jobs may run from any directory)."""
    cfg = yaml.safe_load((HERE / "k2_cascade.yaml").read_text())
    cfg.update(space=str(HERE / "space.yaml"), data_dir=str(DATA))
    path = RUNS / "k2_cascade.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def summarize(seed: int) -> dict | None:
    """The committed summary of one finished seed (None while it runs)."""
    run = RUNS / "compare" / f"cascade-seed{seed}"
    evaluated = PipelineLayout(run).retrain / EVAL
    if not ((run / SUMMARY).is_file() and evaluated.is_file()):
        return None
    ev, arch = json.loads(evaluated.read_text()), json.loads((PipelineLayout(run).search / ARCH).read_text())
    keep = ("arch", "macs", "params", "mean_macs", "cascade", "fitness", "evaluations")
    return {
        "seed": seed,
        "config": yaml.safe_load((run / CONFIG).read_text()) if (run / CONFIG).is_file() else None,
        "search": {k: arch[k] for k in keep if k in arch},
        "eval": {k: ev[k] for k in ("ensemble", "paths", "macs", "params", "latency_ms", "images") if k in ev},
        "cascade": {k: v for k, v in ev["cascade"].items() if k != "curve"},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((run / SUMMARY).stat().st_mtime)),
    }


def collect(commit: bool) -> list[int]:
    done = []
    for seed in SEEDS:
        path = RESULTS / f"seed{seed}.json"
        if path.is_file():
            done.append(seed)
            continue
        summary = summarize(seed)
        if summary is None:
            continue
        write_text(path, json.dumps(summary, indent=1) + "\n")
        done.append(seed)
        print(f"seed {seed}: {path}", flush=True)
        if commit:
            _commit(path)
    return done


def run(max_parallel: int, commit: bool) -> int:
    if not (DATA / "test").is_dir():
        shared = ROOT.parent / "shared" / "data" / "cifar10"
        carve = [*_neas(), "carve-test", str(shared), "--out", str(DATA), "--test-fraction", "0.2"]
        subprocess.run(carve, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if len(collect(commit)) == len(SEEDS):
        return 0
    argv = [*_neas(), "compare", "--config", str(_config()), "--rows", "cascade", "--seeds", str(len(SEEDS))]
    argv += ["--executor", "local", "--max-parallel", str(max_parallel), "--threads-per-job", "1"]
    argv += ["--out", str(RUNS / "compare")]
    log = (RUNS / "compare.log").open("a")
    job = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM runs the finally below, as Ctrl-C does
    try:
        while job.poll() is None:
            time.sleep(60)
            collect(commit)
    finally:  # compare (and with it its jobs) ends with this driver; a rerun resumes it
        if job.poll() is None:
            job.terminate()
            job.wait()
    collect(commit)
    return job.returncode


def _study(unit: str) -> dict:
    summary = json.loads((STUDY / f"{unit}.json").read_text())
    ev = summary["eval"] if "eval" in summary else summary["record"]
    return {**{m: ev["ensemble"][m] for m in METRICS}, "macs": ev["macs"]}


def table() -> str:
    """§9's tables: per seed the cascade (test split) and the rows it is judged against, then the paired
    differences cascade minus row (t 95 % CI over the seeds, verdict)."""
    seeds = {int(p.stem[4:]): json.loads(p.read_text()) for p in sorted(RESULTS.glob("seed*.json"))}
    if not seeds:
        return "not run yet"
    header = ["seed", "row", "top-1 (%)", "NLL", "ECE (%)", "static MACs", "mean MACs (test)", "stop at path 1"]
    cells, per_row = [], {"cascade": {}, **{row: {} for row in ROWS}}
    for seed, s in sorted(seeds.items()):
        c = s["cascade"]
        per_row["cascade"][seed] = {**{m: c[m] for m in METRICS}, "macs": s["eval"]["macs"], "mean": c["mean_macs"]}
        stop = f"{100 * c['stop_fraction'][0]:.1f} % (top-1 {100 * c['stop_top1'][0]:.1f} %)"
        cells.append([seed, "cascade-searched NEAS", *_cells(per_row["cascade"][seed]), stop])
        for row, unit in ROWS.items():
            per_row[row][seed] = {**_study(unit.format(seed)), "mean": None}
            per_row[row][seed]["mean"] = per_row[row][seed]["macs"]
            cells.append([seed, row, *_cells(per_row[row][seed]), "-"])
    lines = [*markdown_table(header, cells), ""]
    diff_header = ["cascade minus", "paired seeds", *(f"Δ {label} [95 % CI]" for label, _, _ in METRICS.values())]
    diffs = []
    for row in ROWS:
        common = sorted(set(per_row["cascade"]) & set(per_row[row]))
        out = [row, len(common)]
        for metric, (_, scale, higher) in METRICS.items():
            a, b = ([per_row[r][s][metric] for s in common] for r in ("cascade", row))
            d = paired_difference(a, b, higher)
            interval = "" if d["lo"] is None else f" [{scale * d['lo']:+.3g}, {scale * d['hi']:+.3g}]"
            out.append(f"{scale * d['mean']:+.3g}{interval} {d['verdict']}")
        diffs.append(out)
    lines += [*markdown_table(diff_header, diffs), ""]
    mean = ci95([s["cascade"]["mean_macs"] / 1e6 for s in seeds.values()])
    lines.append(
        f"- cascade mean MACs on the test split (M): {mean[0]:.3f} ± {mean[1]:.3f}, t 95 % CI "
        f"[{mean[2]:.3f}, {mean[3]:.3f}] over {len(seeds)} seed(s); budget 1.500"
    )
    return "\n".join(lines)


def write_table(text: str) -> None:
    """Writes ``text`` between docs/RESULTS.md's ``<!-- table:cascade_search -->`` markers."""
    doc = RESULTS_MD.read_text()
    begin, end = "<!-- table:cascade_search -->\n", "<!-- /table:cascade_search -->"
    if begin not in doc or end not in doc:
        raise SystemExit(f"{RESULTS_MD} has no {begin.strip()} ... {end} markers")
    head, rest = doc.split(begin, 1)
    write_text(RESULTS_MD, head + begin + text + "\n" + end + rest.split(end, 1)[1])


def _cells(numbers: dict) -> list[str]:
    return [
        f"{100 * numbers['top1']:.2f}",
        f"{numbers['nll']:.4f}",
        f"{100 * numbers['ece']:.2f}",
        f"{numbers['macs'] / 1e6:.3f}M",
        f"{numbers['mean'] / 1e6:.3f}M",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "collect", "table"])
    parser.add_argument("--commit", action="store_true", help="commit each seed's summary when it finishes")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="table: write it into docs/RESULTS.md")
    args = parser.parse_args()
    if args.action == "table":
        text = table()
        if args.write:
            write_table(text)
        print(text)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.action == "collect":
        collect(args.commit)
        return 0
    return run(args.max_parallel, args.commit)


if __name__ == "__main__":
    sys.exit(main())
