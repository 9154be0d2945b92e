"""The CIFAR-10 study's plan: its units, their configurations and where their results go (issue 17).

What both scripts beside this one need: ``study.py`` runs the units, ``tables.py`` tabulates their
summaries against the plan. Neither imports the other; each is run as a script from this folder
(``python experiments/cifar10/study.py ...``), which puts this file on the import path.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from neas.runfiles import RANK

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("STUDY_RESULTS", ROOT / "docs" / "results" / "study"))
SMOKE = os.environ.get("STUDY_SMOKE") == "1"  # seconds-long units, to check the driver itself
DATA = ROOT / "data" / "cifar10-carved"
SEEDS = (0, 1, 2)
RETRAIN_SEEDS = (1, 2)  # extra retraining seeds per searched ensemble (the pipeline's own retrain is the third)
# the K = 2 rows, and the supernets whose ranking is measured
SHRINK_MODES = ("diversity", "none", "accuracy", "quality")
# the ranking study's from-scratch scores (docs/results/before_fix/rank.json: 30 ensembles, 3 epochs),
# reused as scratch.json
OLD_RANK = ROOT / "docs" / "results" / "before_fix" / RANK
BUDGET, HALF = "1.5M", "0.75M"

# the settings of docs/RESULTS.md (experiments/cifar10/k2_diversity.yaml), for every pipeline
BASE = yaml.safe_load((HERE / "k2_diversity.yaml").read_text())


def pipeline_config(mode: str, k: int, seed: int, budget: str) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg.update(seed=seed, data_dir=str(DATA), space=str(HERE / ("space.yaml" if k == 2 else f"space_k{k}.yaml")))
    cfg["supernet"]["shrink"] = mode
    cfg["search"]["max_macs"] = budget
    cfg["compare_random"] = seed == 0  # evolution vs random (Figure 5) from the seed-0 searches
    if SMOKE:
        cfg["supernet"].update(epochs=1, shrink_every=1, shrink_samples=2, probe_images=64)
        cfg["search"].update(population=4, parents=2, generations=1, mutations=1, crossovers=1, val_images=200)
        cfg["retrain"].update(epochs=1, holdout=0.9)
    return cfg


def _pipelines() -> dict[str, dict]:
    """Every seed's searches: K = 2 under each shrinking mode, one network, a half-budget one, its deep ensemble."""
    out = {}
    for seed in SEEDS:
        for mode in SHRINK_MODES:
            config = pipeline_config(mode, 2, seed, BUDGET)
            out[f"k2_{mode}_seed{seed}"] = {"kind": "pipeline", "config": config, "deps": []}
        out[f"k1_seed{seed}"] = {"kind": "pipeline", "config": pipeline_config("none", 1, seed, BUDGET), "deps": []}
        out[f"k1half_seed{seed}"] = {"kind": "pipeline", "config": pipeline_config("none", 1, seed, HALF), "deps": []}
        out[f"deep_seed{seed}"] = {"kind": "deep", "source": f"k1half_seed{seed}", "deps": [f"k1half_seed{seed}"]}
    return out


def _ranks() -> dict[str, dict]:
    """Kendall tau of each shrinking mode's supernet, per supernet seed."""
    out = {}
    for seed in SEEDS:
        for mode in SHRINK_MODES:
            out[f"rank_{mode}_seed{seed}"] = {"kind": "rank", "mode": mode, "seed": seed, "deps": []}
    return out


def _retrains() -> dict[str, dict]:
    """Every searched network trained again from other seeds (the deep ensemble's copies too)."""
    out = {}
    for seed in SEEDS:
        for name in ("k2_diversity", "k2_none", "k2_accuracy", "k2_quality", "k1"):
            source = f"{name}_seed{seed}"
            for r in RETRAIN_SEEDS:
                out[f"{source}_retrain{r}"] = {
                    "kind": "retrain",
                    "source": source,
                    "retrain_seed": 1000 * r + seed,
                    "deps": [source],
                }
        for r in RETRAIN_SEEDS:  # the deep ensemble's two copies, trained again from other seeds
            out[f"deep_seed{seed}_retrain{r}"] = {
                "kind": "deep",
                "source": f"k1half_seed{seed}",
                "seed": 1000 * r + 100 + 10 * seed,
                "deps": [f"k1half_seed{seed}"],
            }
    return out


def _ablations() -> dict[str, dict]:
    """The ablations (paper Tables 3-5) on the seed-0 searches, three retraining seeds each."""
    out = {}
    for k in (3, 5):  # K paths under the same budget; K = 2 is k2_diversity
        source = f"k{k}_diversity_seed0"
        out[source] = {"kind": "pipeline", "config": pipeline_config("diversity", k, 0, BUDGET), "deps": []}
        for r in RETRAIN_SEEDS:
            out[f"{source}_retrain{r}"] = {
                "kind": "retrain",
                "source": source,
                "retrain_seed": 1000 * r,
                "deps": [source],
            }
    for which in ("homo-hetero", "split"):
        for r in (0, *RETRAIN_SEEDS):
            deps = ["k2_diversity_seed0"] + (["rank_diversity_seed0"] if which == "split" else [])  # its supernet
            out[f"{which.replace('-', '')}_seed0_retrain{r}"] = {
                "kind": "ablate",
                "which": which,
                "source": "k2_diversity_seed0",
                "retrain_seed": 1000 * r,
                "deps": deps,
            }
    return out


def units() -> dict[str, dict]:
    """name -> {kind, deps, ...}; the order is the order of work."""
    out = {**_pipelines(), **_ranks(), **_retrains(), **_ablations()}
    only = os.environ.get("STUDY_ONLY")  # a comma-separated subset (and what it needs), for checks
    if only:
        keep = set(only.split(","))
        keep |= {d for n in keep for d in out[n]["deps"]}
        out = {n: u for n, u in out.items() if n in keep}
    return out
