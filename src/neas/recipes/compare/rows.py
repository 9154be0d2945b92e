"""The ``neas run`` config of each row of a comparison, from the user's config.

- ``neas``: the config as given; ``none``, ``accuracy``, ``quality``: the same with that shrink mode;
- ``single``: a K = 1 copy of the space at the same budget (shrink none: diversity needs two paths);
- ``deep``: the same at budget / K (its K copies share the budget);
- ``cascade``: the config's K paths searched for their cascade: the static MAC bound becomes a bound on
  the cascade's mean MACs (``search.max_mean_macs``; with ``budgets:`` on MACs, ``budget_metric:
  mean_macs``), and the retraining fits the winner's cascade on a held-out part (``neas run`` sets it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from neas.config import from_dict
from neas.errors import NeasError
from neas.recipes.run import RunConfig, budget_value, stage_configs
from neas.runfiles import COMPARE_CONFIGS
from neas.schemas.compare import CompareConfig
from neas.space import SearchSpace

__all__ = ["K1_ROWS", "at_each_budget", "k1_space", "row_config", "run_config"]

SHRINK_ROWS = {"none": "none", "accuracy": "accuracy", "quality": "quality"}  # row -> supernet shrink mode
K1_ROWS = ("single", "deep")  # rows searched in the K = 1 copy of the space
SCALED = ("macs", "paper_flops", "params")  # budgets a deep ensemble's K copies share
CASCADE_RULE = ("cascade_exit", "cascade_tolerance")  # the search's exit rule: read by the rows that price cascades


def run_config(cfg: CompareConfig) -> RunConfig:
    """The user's ``neas run`` config with compare's ``neas run`` overrides, its ``budgets:`` checked."""
    if not Path(cfg.config).is_file():
        raise NeasError(f"--config {cfg.config}: no such `neas run` YAML file")
    base = from_dict(RunConfig, cfg.run_config_data())  # the YAML and the `neas run` overrides
    for text in base.budgets or ():
        budget_value(base.budget_metric, text)
    return base


def k1_space(base: RunConfig, out: Path) -> tuple[SearchSpace, Path]:
    """The config's space with one path (the best single network's), and where its YAML goes."""
    space = SearchSpace.resolve(base.space)
    return dataclasses.replace(space, name=f"{space.name}-k1", num_paths=1), out / COMPARE_CONFIGS / "space-k1.yaml"


def _share(base: RunConfig, metric: str, text: str, k: int) -> str:
    """One copy's share of a budget: the budget / K."""
    if metric not in SCALED:
        raise NeasError(f"--rows deep: a {metric} budget cannot be split between copies; bound MACs instead")
    return str(int(budget_value(metric, text)) // k)


def _deep_search(base: RunConfig, k: int) -> tuple[dict, list[str] | None]:
    """The search section and ``budgets:`` at budget / K: each of the K copies gets its share of every cost bound."""
    _, se, _ = stage_configs(_without_cascade_rule(base))
    search = dict(base.search)
    for metric in SCALED:
        for bound in ("min", "max"):
            value = getattr(se.constraints, f"{bound}_{metric}")
            if value is not None:
                search[f"{bound}_{metric}"] = int(value) // k
    if se.constraints.max_latency_ms is not None or se.constraints.min_latency_ms is not None:
        raise NeasError("--rows deep: a latency budget cannot be split between copies; bound MACs instead")
    if base.budgets:
        return search, [_share(base, base.budget_metric, text, k) for text in base.budgets]
    if all(getattr(se.constraints, f"max_{metric}") is None for metric in SCALED):
        raise NeasError(
            "--rows deep: the config bounds none of search.max_macs, max_paper_flops, max_params, so there is "
            "no budget to split"
        )
    return search, None


def _cascade_search(base: RunConfig) -> dict:
    """The search section and ``budget_metric`` of the cascade row: the MAC budget bounds the cascade's mean
    MACs instead of the static MACs (the paths may cost more together, as long as most images stop early)."""
    search = dict(base.search)
    if base.budgets:
        if base.budget_metric != "macs":
            raise NeasError(
                f"--rows cascade: budget_metric {base.budget_metric!r}; the cascade row holds the cascade's mean MACs "
                "to a MAC budget, so budgets: must be on macs"
            )
        search.pop("max_macs", None)
        return {"search": search, "budget_metric": "mean_macs"}
    bound = stage_configs(_without_cascade_rule(base))[1].constraints.max_macs
    if bound is None:
        raise NeasError(
            "--rows cascade: the config bounds no search.max_macs, so there is no MAC budget for the cascade's "
            "mean MACs; set search.max_macs (or budgets: on macs)"
        )
    search.pop("max_macs", None)
    if search.get("max_mean_macs") is not None:
        raise NeasError("--rows cascade: the config sets search.max_mean_macs already; the row sets it from max_macs")
    return {"search": {**search, "max_mean_macs": str(int(bound))}}


def _prices_cascades(base: RunConfig) -> bool:
    """Whether the config's own search prices cascades (a mean-MACs bound, or ``budgets:`` on mean MACs)."""
    bounded = any(base.search.get(f"{bound}_mean_macs") is not None for bound in ("min", "max"))
    return bounded or bool(base.budgets and base.budget_metric == "mean_macs")


def _without_cascade_rule(base: RunConfig) -> RunConfig:
    """``base`` without the search's exit rule when its own search prices no cascade (the rule is then the
    cascade row's alone, and a search that prices none refuses it)."""
    if _prices_cascades(base):
        return base
    return dataclasses.replace(base, search={k: v for k, v in base.search.items() if k not in CASCADE_RULE})


def row_config(base: RunConfig, row: str, seed: int, out: Path, k1_file: Path) -> RunConfig:
    """The ``neas run`` config of ``row`` (``deep``: its K = 1 search at budget / K) for ``seed``."""
    changes = {"seed": seed, "out": str(out), "resume": False}
    if row in SHRINK_ROWS:
        changes["supernet"] = {**base.supernet, "shrink": SHRINK_ROWS[row]}
    if row == "cascade":
        changes.update(_cascade_search(base))
    if row in K1_ROWS:  # shrink none, as the study's K = 1 rows (diversity needs two paths)
        changes["space"] = str(k1_file)
        changes["supernet"] = {**base.supernet, "shrink": "none"}
        search = base.search
        if row == "deep":
            search, budgets = _deep_search(base, SearchSpace.resolve(base.space).num_paths)
            changes["budgets"] = budgets or base.budgets
        changes["search"] = {k: v for k, v in search.items() if k != "split"}  # one path: no split point
        changes["retrain"] = {k: v for k, v in base.retrain.items() if k != "cascade"}  # one path: nothing to exit
    if row != "cascade" and not _prices_cascades(base):  # the exit rule is the cascade row's; the others price none
        changes["search"] = {k: v for k, v in changes.get("search", base.search).items() if k not in CASCADE_RULE}
    return dataclasses.replace(base, **changes)


def at_each_budget(rc: RunConfig) -> list:
    """``rc`` once per budget of its ``budgets:`` (each as the search's bound), or ``[rc]`` without."""
    if not rc.budgets:
        return [rc]
    bound = f"max_{rc.budget_metric}"
    return [dataclasses.replace(rc, budgets=None, search={**rc.search, bound: text}) for text in rc.budgets]
