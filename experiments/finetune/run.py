"""Fine-tuning vs training from scratch on CIFAR-10 (issue 38 item 5; docs/RESULTS.md section 9).

    OMP_NUM_THREADS=1 nohup python experiments/finetune/run.py run --commit > /tmp/finetune.log 2>&1 &
    python experiments/finetune/run.py status
    python experiments/finetune/run.py table --write     # the tables of docs/RESULTS.md, from the summaries

The CIFAR-10 training images (an ImageFolder of 10 x 5000) are split by class: **source** = airplane,
automobile, bird, cat, deer; **target** = dog, frog, horse, ship, truck. Each class's files are shuffled
with a fixed seed; per class the first TEST images are the test split, the next TRAIN the training
split (source: PRETRAIN_TRAIN). The folders are symlinks under DATA (/tmp by default); nothing is copied.

Per seed s (the networks' seed, paired across arms):

- ``pretrain``: ``neas retrain --recipe small`` of the NEAS ensemble found by the CIFAR-10 study
  (docs/results/study/k2_diversity_seed0.json, in experiments/cifar10/space.yaml) on the source classes;
- ``scratch``: the same ensemble trained from scratch on the target classes, ``--recipe small``;
- ``finetune``: ``--init`` the seed's pre-trained model, ``--recipe finetune --lr-per-2048 0.05``
  (heads re-initialised: the classes differ);
- ``finetune_frozenbn``: the same with ``--frozen-bn``;
- ``finetune_lr3x``, ``finetune_lr10x``: the same at 0.15 and 0.5 (the small recipe's) learning rate
  per 2048 images.

The finetune recipe first had lr 0.05 per 2048 images (a tenth of small's); these runs moved it to small's
0.5. The summaries of ``finetune``, ``finetune_frozenbn`` and ``finetune_lr10x`` committed before that ran
``--recipe finetune`` with its lr at 0.05 (and ``--lr-per-2048 0.5`` for lr10x); the commands now say the
rate of every arm.

All target arms train EPOCHS epochs on the same images and are scored on the same test images. Each
finished run's small JSON summary is written to docs/results/finetune/<arm>_seed<s>.json (and, with
--commit, committed at once); a run whose summary exists is skipped, so ``run`` resumes after a kill.
A pre-training whose weights are gone (a fresh /tmp) is trained again when a fine-tuning needs them
(its summary is kept). The code that runs is a copy of src/ taken when ``run`` starts, so edits to the
working tree do not reach a running experiment. One process, one thread (set OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from neas.io import write_text
from neas.runfiles import ARCH, EVAL, METRICS, MODEL
from neas.stats import ci95, paired_difference

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "finetune"
CIFAR = Path(os.environ.get("CIFAR10_TRAIN", ROOT.parent / "shared" / "data" / "cifar10" / "train"))
WORK = Path(os.environ.get("FINETUNE_WORK", "/tmp/neas-finetune"))
DATA = WORK / "data"
RUNS = WORK / "runs"
ARCH_SOURCE = ROOT / "docs" / "results" / "study" / "k2_diversity_seed0.json"
SPACE = ROOT / "experiments" / "cifar10" / "space.yaml"
SOURCE = ("airplane", "automobile", "bird", "cat", "deer")
TARGET = ("dog", "frog", "horse", "ship", "truck")
PRETRAIN_TRAIN = 4000  # source images per class
TRAIN = 1000  # target images per class: "a few thousand images of their own"
TEST = 1000  # test images per class (source and target alike)
EPOCHS = 10  # every target arm; the pre-training too
SEEDS = (0, 1, 2)
ARMS = ("scratch", "finetune", "finetune_frozenbn", "finetune_lr3x", "finetune_lr10x")
COMMON = ["--data", "imagefolder", "--batch-size", "64", "--workers", "0", "--device", "cpu"]
COMMON += ["--epochs", str(EPOCHS), "--eval-every", str(EPOCHS)]


def build_data() -> None:
    """source/ and target/ (train/ and test/, one folder per class) as symlinks into CIFAR."""
    for name, classes, train in (("source", SOURCE, PRETRAIN_TRAIN), ("target", TARGET, TRAIN)):
        for c in classes:
            files = sorted(p.name for p in (CIFAR / c).iterdir())
            random.Random(f"finetune-{c}").shuffle(files)
            for split, chosen in (("test", files[:TEST]), ("train", files[TEST : TEST + train])):
                folder = DATA / name / split / c
                if folder.is_dir() and len(list(folder.iterdir())) == len(chosen):
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                for f in chosen:
                    link = folder / f
                    if not link.is_symlink():
                        link.symlink_to(CIFAR / c / f)


def arch_file() -> Path:
    """The CIFAR-10 study's NEAS ensemble (seed 0) as an arch file in the study's space."""
    path = WORK / ARCH
    if not path.exists():
        arch = json.loads(ARCH_SOURCE.read_text())["arch"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"split": arch["split"], "paths": arch["paths"], "space": str(SPACE)}))
    return path


def command(arm: str, seed: int) -> list[str]:
    """The neas command of one run (without the executable)."""
    out = RUNS / f"{arm}_seed{seed}"
    base = ["retrain", "--arch", str(arch_file()), *COMMON, "--seed", str(seed), "--out", str(out)]
    if arm == "pretrain":
        return [*base, "--recipe", "small", "--data-dir", str(DATA / "source")]
    base += ["--data-dir", str(DATA / "target")]
    if arm == "scratch":
        return [*base, "--recipe", "small"]
    init = ["--init", str(RUNS / f"pretrain_seed{seed}"), "--recipe", "finetune"]
    lr = {"finetune_lr3x": "0.15", "finetune_lr10x": "0.5"}.get(arm, "0.05")
    return [*base, *init, "--lr-per-2048", lr, *(["--frozen-bn"] if arm == "finetune_frozenbn" else [])]


def summary_path(arm: str, seed: int) -> Path:
    return RESULTS / f"{arm}_seed{seed}.json"


def _train(arm: str, seed: int, code: Path) -> dict:
    """Runs one training to its end (a fresh run directory) and returns its summary."""
    out = RUNS / f"{arm}_seed{seed}"
    shutil.rmtree(out, ignore_errors=True)  # a killed run: start it again (ours: under WORK)
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "neas", *command(arm, seed)]
    start, cpu = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: {' '.join(argv[2:])}", flush=True)
    subprocess.run(argv, env=env, check=True)
    ev = json.loads((out / EVAL).read_text())
    losses = [json.loads(line)["loss"] for line in (out / METRICS).read_text().splitlines() if '"loss"' in line]
    return {
        "arm": arm,
        "seed": seed,
        "command": "neas " + " ".join(command(arm, seed)).replace(str(WORK), "$WORK"),
        "test_images": ev["images"],
        "top1": ev["ensemble"]["top1"],
        "nll": ev["ensemble"]["nll"],
        "ece": ev["ensemble"]["ece"],
        "path_top1": [ev[f"path{j}"]["top1"] for j in range(2)],
        "train_loss": losses,
        "wall_s": round(time.time() - start, 1),
        "cpu_s": round(_cpu_since(cpu), 1),  # the machine is shared: CPU time is the cost, wall time is not
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _cpu_since(before) -> float:
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _commit(path: Path, arm: str, seed: int) -> None:
    rel = str(path.relative_to(ROOT))
    for attempt in range(10):  # a person's git command may hold the index for a moment
        steps = (["git", "add", rel], ["git", "commit", "-q", "-m", f"finetune experiment: {arm} seed {seed}", rel])
        if all(subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0 for cmd in steps):
            return
        time.sleep(2 + attempt)
    print(f"could not commit {rel}: commit it by hand", file=sys.stderr)


def _snapshot() -> Path:
    """A copy of src/ as it is now, with the commit it came from: what every run of this invocation runs."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    code = WORK / f"code-{head.strip() or 'unknown'}-{os.getpid()}"
    shutil.copytree(ROOT / "src", code, ignore=shutil.ignore_patterns("__pycache__"))
    return code


def run(commit: bool) -> None:
    build_data()
    code = _snapshot()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        todo = [arm for arm in ("pretrain", *ARMS) if not summary_path(arm, seed).exists()]
        gone = not (RUNS / f"pretrain_seed{seed}" / MODEL).exists()
        retrain_weights = gone and "pretrain" not in todo and any(arm.startswith("finetune") for arm in todo)
        for arm in ["pretrain!", *todo] if retrain_weights else todo:
            name = arm.rstrip("!")
            summary = _train(name, seed, code)
            if arm.endswith("!"):  # weights gone, summary kept: trained again for its weights only
                continue
            summary["code"] = code.name.split("-")[1]
            write_text(summary_path(name, seed), json.dumps(summary, indent=1) + "\n")
            if commit:
                _commit(summary_path(name, seed), name, seed)


def _load() -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    for path in sorted(RESULTS.glob("*_seed*.json")):
        s = json.loads(path.read_text())
        found.setdefault(s["arm"], {})[s["seed"]] = s
    return found


def _pct(values: list[float]) -> str:
    mean, sd, lo, hi = ci95([100 * v for v in values])
    return f"{mean:.2f} ± {sd:.2f} [{lo:.2f}, {hi:.2f}]"


def _row(arm: str, rows: list[dict]) -> str:
    nll = ci95([r["nll"] for r in rows])
    cpu = sum(r["cpu_s"] for r in rows) / len(rows)
    return (
        f"| {arm} | {len(rows)} | {_pct([r['top1'] for r in rows])} | {nll[0]:.3f} ± {nll[1]:.3f} "
        f"[{nll[2]:.3f}, {nll[3]:.3f}] | {_pct([r['ece'] for r in rows])} | {cpu:.0f} |"
    )


def _difference(a: dict[int, dict], b: dict[int, dict], label: str) -> str:
    """One line of paired differences ``a - b`` over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return f"| {label} | 0 | | | not run yet |"
    top1 = paired_difference([100 * a[s]["top1"] for s in seeds], [100 * b[s]["top1"] for s in seeds])
    nll = paired_difference([a[s]["nll"] for s in seeds], [b[s]["nll"] for s in seeds], higher_is_better=False)
    return (
        f"| {label} | {len(seeds)} | {top1['mean']:+.2f} [{top1['lo']:+.2f}, {top1['hi']:+.2f}] | "
        f"{nll['mean']:+.4f} [{nll['lo']:+.4f}, {nll['hi']:+.4f}] | {top1['verdict']} |"
    )


def tables() -> str:
    """The arms' table (top-1, NLL, ECE: mean ± sd [t 95 % CI] over seeds) and the paired differences
    (over the seeds both arms have), then every seed's top-1 per arm."""
    found = _load()
    lines = ["| arm | seeds | test top-1 (%) | NLL | ECE (%) | CPU (s) |", "|---|---|---|---|---|---|"]
    lines += [_row(arm, [found[arm][s] for s in sorted(found[arm])]) for arm in ("pretrain", *ARMS) if arm in found]
    header = "| difference (paired by seed) | seeds | Δ top-1 (pp) [95 % CI] | Δ NLL [95 % CI] | verdict (top-1) |"
    lines += ["", header]
    lines.append("|---|---|---|---|---|")
    pairs = [(arm, "scratch") for arm in ARMS[1:]] + [(arm, "finetune") for arm in ARMS[2:]]
    lines += [_difference(found.get(a, {}), found.get(b, {}), f"{a} − {b}") for a, b in pairs]
    per_seed = [
        f"seed {s}: " + " / ".join(f"{100 * found[a][s]['top1']:.2f}" if s in found.get(a, {}) else "–" for a in ARMS)
        for s in SEEDS
    ]
    return "\n".join(lines) + f"\n\nTest top-1 (%) per seed, {' / '.join(ARMS)}: {'; '.join(per_seed)}."


def write_tables(text: str) -> None:
    results = ROOT / "docs" / "RESULTS.md"
    doc = results.read_text()
    begin, end = "<!-- table:finetune -->\n", "<!-- /table:finetune -->"
    if begin not in doc or end not in doc:
        raise SystemExit(f"{results} has no {begin.strip()} ... {end} markers")
    head, rest = doc.split(begin, 1)
    write_text(results, head + begin + text + "\n" + end + rest.split(end, 1)[1])


def status() -> str:
    return "\n".join(
        f"{arm} seed {s}: {'done' if summary_path(arm, s).exists() else 'pending'}"
        for s in SEEDS
        for arm in ("pretrain", *ARMS)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("run", "status", "table", "dry-run"))
    parser.add_argument("--commit", action="store_true", help="commit each finished run's summary at once")
    parser.add_argument("--write", action="store_true", help="table: write it into docs/RESULTS.md")
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.commit)
    elif args.action == "dry-run":
        print("\n".join("neas " + " ".join(command(a, s)) for s in SEEDS for a in ("pretrain", *ARMS)))
    elif args.action == "status":
        print(status())
    else:
        text = tables()
        print(text)
        if args.write:
            write_tables(text)


if __name__ == "__main__":
    main()
