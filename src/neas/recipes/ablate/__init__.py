"""``neas ablate``: the paper's ablations as resumable drivers (docs/RESULTS.md).

    neas ablate homo-hetero --arch runs/x/search/arch.json --data cifar10 --data-dir D --out runs/homo_hetero
    neas ablate split       --arch runs/x/search/arch.json --data cifar10 --data-dir D --out runs/split
    neas ablate paths       --config cfg.yaml --paths 2 3 5 --out runs/paths
    neas ablate search      --run runs/a runs/b --out runs/search_curve
    neas ablate deep-ensemble --arch runs/k1/search/arch.json --copies 2 --data cifar10 --data-dir D --out runs/deep

``homo-hetero`` (Table 3) retrains the searched ensemble and, for each path k, the homogeneous
ensemble whose K paths all copy path k. ``split`` (Table 4) retrains the ensemble as searched,
the same ensemble with no shared layers (the shared layers copied into every path, which costs
more), and — when the arch file comes from ``neas search`` — the best ensemble that the same
search finds with no shared layers under the same budget. ``deep-ensemble`` retrains one
architecture (typically a searched K = 1 network) ``--copies`` times from independent
initialisations (seeds seed, seed+1, ...) and scores the average of their logits: the plain deep
ensemble a searched ensemble must beat at equal cost (:mod:`.variants`). ``paths`` (Table 5) runs
the whole pipeline of a ``neas run`` config once per K under the config's budget; ``search``
(Figure 5) draws evolution against random search at equal evaluations from runs made with
``compare_random: true`` (:mod:`.runs`).

Each ablation's options are a schema of :mod:`neas.schemas.ablate`. Every retrain/run lives in a
sub-directory of ``--out`` and resumes after an interruption; finished ones are skipped. The
retrainings are ``neas retrain`` jobs of the ablation's executor (:class:`~neas.options.ExecutorOptions`,
:func:`neas.executor.run_jobs`; default ``debug``: in this process, one after another), their costs
those their ``eval.json`` reports. Each ablation writes ``ablate.json`` and a Markdown table
``ablate.md`` (:mod:`.common`).
"""

from __future__ import annotations

from pathlib import Path

from neas.recipes.ablate.runs import paths_ablation, search_ablation, search_curve
from neas.recipes.ablate.variants import deep_ensemble, homo_hetero, mirror, split_ablation, unshare
from neas.rundir import release_run_dir
from neas.runfiles import ABLATE, ABLATE_TABLE

__all__ = [
    "deep_ensemble",
    "homo_hetero",
    "main",
    "mirror",
    "paths_ablation",
    "search_ablation",
    "search_curve",
    "split_ablation",
    "unshare",
]

_ABLATIONS = {  # neas ablate <name>: its config (neas.schemas.ablate) -> the ablation's record
    "homo-hetero": lambda cfg: homo_hetero(cfg.retrain.arch, cfg.retrain, cfg.retrain.out, cfg),
    "split": lambda cfg: split_ablation(cfg.retrain.arch, cfg.retrain, cfg.retrain.out, cfg.equal_budget, cfg),
    "deep-ensemble": lambda cfg: deep_ensemble(cfg.retrain.arch, cfg.retrain, cfg.copies, cfg.retrain.out, cfg),
    "paths": lambda cfg: paths_ablation(cfg.config, cfg.paths, cfg.out, cfg.reuse_runs),
    "search": lambda cfg: search_ablation(cfg.run, cfg.out, cfg.top),
}


def main(cfg, args) -> None:
    """`neas ablate ...`: runs the ablation, prints its table."""
    try:
        record = _ABLATIONS[args.ablation](cfg)
    finally:
        release_run_dir(Path(args.out))
    print(Path(args.out, ABLATE_TABLE).read_text().rstrip())
    print(f"ablate: {Path(args.out, ABLATE)} ({record['ablation']})")
