"""``neas run --dry-run``: what a run would do, before anything is trained or written.

The resolved config; the stages with their sizes; the space's MACs range at the data's classes and
how much of it the budget keeps; the data (classes, images per part). Nothing is written.
"""

from __future__ import annotations

import random

import yaml

from neas.config import to_dict
from neas.cost import cost_table
from neas.data.datasets import scan_split
from neas.data.split import holdout_split
from neas.schemas.run import RunConfig
from neas.search.constraints import measure_costs, restrict_split
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace

__all__ = ["describe_plan"]

DRAWS = 2000  # random ensembles drawn to estimate the share of the space within the budget


def describe_plan(cfg: RunConfig, sn, se, rt) -> str:
    """The text ``--dry-run`` prints for the stage configs ``sn``, ``se``, ``rt`` of ``cfg``."""
    space = SearchSpace.resolve(sn.space)
    data = scan_split(sn.data, "train", space.input_size, sn.data_dir, sn.download)
    kept, held = holdout_split(data.labels, sn.holdout) if sn.holdout else (data.labels, [])
    lines = ["neas run --dry-run: nothing is started or written", "", "config:"]
    lines += ["  " + line for line in yaml.safe_dump(to_dict(cfg), sort_keys=False).splitlines()]
    lines += [
        "",
        f"data: {sn.data}, {data.num_classes} classes, {len(data.labels)} training images "
        f"({len(kept)} to train the supernet, {len(held)} held out to score candidates); the test split is "
        "read by the retraining",
        *_stages(cfg, sn, se, rt),
        *_budget(space, data.num_classes, se),
    ]
    return "\n".join(lines)


def _stages(cfg: RunConfig, sn, se, rt) -> list[str]:
    evo = se.evolution
    evaluations = se.evaluations or evo.population * evo.generations
    stages = [
        f"  supernet/  {sn.epochs} epochs, batch {sn.batch_size}, shrinking {sn.shrink.mode} every {sn.shrink.every}",
        f"  search/    {se.strategy}: {evo.generations} generations x {evo.population} (<= {evaluations} candidates)",
    ]
    if cfg.compare_random:
        stages.append("  search_random/  random search, as many evaluations")
    if cfg.budgets:
        stages.append(f"  budgets/   one retraining per {cfg.budget_metric} budget: {', '.join(cfg.budgets)}")
    else:
        cascade = f", then its cascade fitted on a held-out {rt.holdout:g}" if rt.cascade else ""
        stages.append(f"  retrain/   {rt.epochs} epochs, batch {rt.batch_size}{cascade}")
    return ["", f"stages (in {cfg.out}):", *stages]


def _budget(space: SearchSpace, num_classes: int, se) -> list[str]:
    """The space's MACs range and the share of random ensembles within the static bounds."""
    table, shrunk = cost_table(space, num_classes), restrict_split(ShrunkSpace.full(space), se.split)
    lo, hi = table.range(shrunk, "macs")
    rng = random.Random(0)
    archs = [EnsembleArch.sample(space, rng, shrunk) for _ in range(DRAWS)]
    fit = sum(se.constraints.satisfied(measure_costs(se.constraints, a, table, None)) for a in archs)
    bounds = se.constraints.active() or "none"
    return [
        "",
        f"space {space.name!r}: {shrunk.num_combinations} layer combinations, ensembles "
        f"{lo / 1e6:.3f}M-{hi / 1e6:.3f}M MACs at {num_classes} classes",
        f"budget {bounds}: {100 * fit / DRAWS:.1f}% of {DRAWS} random ensembles within its static bounds"
        + (" (mean-MACs bounds are priced only when candidates are scored)" if se.constraints.needs_cascade else ""),
    ]
