"""K-path evolution search (paper §3.4 and Appendix B; docs/DESIGN.md §7) and its random baseline.

Operators work on *columns* (the K ops of one layer) and a split point, then restore the
invariants of an ensemble: a layer that becomes shared takes the op of one randomly chosen
path; a layer that becomes private starts from its shared op and is re-drawn to a surviving
combination that contains it. Every member lies in the shrunk space and within the budget.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from neas.errors import NeasError
from neas.search.settings import EvolutionSettings
from neas.space import EnsembleArch, Op, ShrunkSpace

__all__ = [
    "EvolutionSettings",
    "SearchProblem",
    "crossover",
    "evolve",
    "mutate",
    "random_search",
    "repair",
    "sample_within",
]

log = logging.getLogger(__name__)

Columns = list[tuple[Op, ...]]


def _columns(arch: EnsembleArch) -> Columns:
    return [tuple(p[i] for p in arch.paths) for i in range(arch.num_layers)]


def _combo_with(shrunk: ShrunkSpace, index: int, op: Op, rng: random.Random) -> tuple[Op, ...] | None:
    """A random surviving combination of layer ``index`` containing ``op``, in random path order."""
    combos = [c for c in shrunk.layer_combinations(index) if op in c]
    if not combos:
        return None
    combo = list(rng.choice(combos))
    rng.shuffle(combo)
    return tuple(combo)


def _any_combo(shrunk: ShrunkSpace, index: int, rng: random.Random) -> tuple[Op, ...]:
    combo = list(rng.choice(shrunk.layer_combinations(index)))
    rng.shuffle(combo)
    return tuple(combo)


def repair(columns: Columns, split: int, shrunk: ShrunkSpace, rng: random.Random) -> EnsembleArch | None:
    """Restores the invariants of an ensemble; ``None`` when the result leaves the shrunk space."""
    k = shrunk.space.num_paths
    fixed = []
    for index, column in enumerate(columns, start=1):
        if index <= split:
            if len(set(column)) > 1:
                column = (column[rng.randrange(k)],) * k  # becomes shared: one path's op
        elif len(set(column)) < k:
            combo = _combo_with(shrunk, index, column[rng.randrange(k)], rng)  # becomes private
            if combo is None:
                return None
            column = combo
        fixed.append(column)
    try:
        arch = EnsembleArch(split, tuple(zip(*fixed)))
    except NeasError:
        return None
    return arch if arch.is_valid(shrunk.space, shrunk) else None


def mutate(
    arch: EnsembleArch, shrunk: ShrunkSpace, p_split: float, p_layer: float, rng: random.Random
) -> EnsembleArch | None:
    """Split-point mutation with probability ``p_split``, then each layer with ``p_layer``."""
    space, k = shrunk.space, arch.num_paths
    columns, split = _columns(arch), arch.split
    points = [s for s in space.split_points if s != split]
    if points and rng.random() < p_split:
        new = rng.choice(points)
        if new > split:  # layers split+1..new become shared: one random path's ops
            path = rng.randrange(k)
            for index in range(split + 1, new + 1):
                columns[index - 1] = (columns[index - 1][path],) * k
        else:  # layers new+1..split become private, starting from their shared op
            for index in range(new + 1, split + 1):
                combo = _combo_with(shrunk, index, columns[index - 1][0], rng)
                if combo is None:
                    return None
                columns[index - 1] = combo
        split = new
    for index in range(1, space.num_layers + 1):
        if rng.random() < p_layer:
            if index <= split:
                columns[index - 1] = (rng.choice(shrunk.shared_ops(index)),) * k
            else:
                columns[index - 1] = _any_combo(shrunk, index, rng)
    return repair(columns, split, shrunk, rng)


def crossover(a: EnsembleArch, b: EnsembleArch, shrunk: ShrunkSpace, rng: random.Random) -> EnsembleArch | None:
    """Per layer one parent's column, the split point of one parent; then repaired."""
    ca, cb = _columns(a), _columns(b)
    columns = [x if rng.random() < 0.5 else y for x, y in zip(ca, cb)]
    split = a.split if rng.random() < 0.5 else b.split
    return repair(columns, split, shrunk, rng)


def sample_within(
    shrunk: ShrunkSpace, rng: random.Random, ok: Callable[[EnsembleArch], bool], exclude=(), tries: int = 20_000
) -> EnsembleArch | None:
    """A uniform random ensemble of the shrunk space that passes ``ok`` (rejection sampling)."""
    for _ in range(tries):
        arch = EnsembleArch.sample(shrunk.space, rng, shrunk)
        if arch not in exclude and ok(arch):
            return arch
    return None


def _children(make, count: int, ok, seen: set, tries_per_child: int = 20) -> list[EnsembleArch]:
    out = []
    for _ in range(count * tries_per_child):
        if len(out) == count:
            break
        child = make()
        if child is not None and child not in seen and child not in out and ok(child):
            out.append(child)
    return out


@dataclass(frozen=True)
class SearchProblem:
    """What a search asks of its caller: which ensembles are allowed (``ok``: within the budget), their
    fitness (``evaluate``: higher is better, a list for a list), and what becomes of each generation
    (``on_generation(g, members, fitnesses, origin_per_member)``: persisted)."""

    ok: Callable[[EnsembleArch], bool]
    evaluate: Callable[[list[EnsembleArch]], list[float]]
    on_generation: Callable[[int, list[EnsembleArch], list[float], list[str]], None]


def evolve(
    shrunk: ShrunkSpace,
    settings: EvolutionSettings,
    problem: SearchProblem,
    rng: random.Random,
    start: int = 0,
    history: dict[EnsembleArch, float] | None = None,
    select_parents: Callable[[dict[EnsembleArch, float], int], list[EnsembleArch]] | None = None,
    anchors: tuple[EnsembleArch, ...] = (),
) -> dict[EnsembleArch, float]:
    """Runs generations ``start..generations-1``; returns every evaluated member's fitness.

    ``anchors`` (those within ``ok``) open generation 0 before its random members: the Pareto
    search anchors its front at the space's cheapest ensemble.

    Generation 0 is P random members; each later one holds up to ``mutations`` mutated and
    ``crossovers`` crossed children of ``parents`` members found so far — the fittest, or whom
    ``select_parents(history, parents)`` picks (the Pareto search: NSGA-II survivors) — topped
    up with random members to P; ``problem.on_generation`` persists each.
    """
    ok, history = problem.ok, dict(history or {})
    for g in range(start, settings.generations):
        seen = set(history)
        members = [a for a in anchors if a not in seen and ok(a)] if g == 0 else []
        origins = ["anchor"] * len(members)
        if g > 0:
            if select_parents is not None:
                parents = select_parents(history, settings.parents)
            else:
                parents = sorted(history, key=lambda a: -history[a])[: settings.parents]
            children = _offspring(shrunk, settings, ok, rng, parents, seen)
            members += [child for child, _ in children]
            origins += [origin for _, origin in children]
        while len(members) < settings.population:
            arch = sample_within(shrunk, rng, ok, exclude=seen | set(members), tries=2000)
            if arch is None:
                break
            members.append(arch)
            origins.append("random")
        if not members:
            log.info("generation %d: no new candidate left in the space", g)
            break
        accs = problem.evaluate(members)
        history.update(zip(members, accs))
        problem.on_generation(g, members, accs, origins)
    return history


def _offspring(
    shrunk: ShrunkSpace, settings: EvolutionSettings, ok, rng: random.Random, parents: list, seen: set
) -> list:
    """(child, origin) pairs: up to ``mutations`` mutated, then ``crossovers`` crossed children of ``parents``."""
    muts = _children(
        lambda: mutate(rng.choice(parents), shrunk, settings.p_split, settings.p_layer, rng),
        settings.mutations,
        ok,
        seen,
    )
    cross = lambda: crossover(*rng.sample(parents, 2), shrunk, rng) if len(parents) > 1 else None
    crosses = _children(cross, settings.crossovers, ok, seen | set(muts))
    return [(m, "mutation") for m in muts] + [(c, "crossover") for c in crosses]


def random_search(
    shrunk: ShrunkSpace,
    budget: int,
    batch: int,
    problem: SearchProblem,
    rng: random.Random,
    start: int = 0,
    history: dict[EnsembleArch, float] | None = None,
) -> dict[EnsembleArch, float]:
    """Evaluates ``budget`` distinct random members, ``batch`` per recorded generation."""
    history = dict(history or {})
    g = start
    while len(history) < budget:
        members = []
        while len(members) < min(batch, budget - len(history)):
            arch = sample_within(shrunk, rng, problem.ok, exclude=set(history) | set(members), tries=2000)
            if arch is None:
                break
            members.append(arch)
        if not members:
            break
        accs = problem.evaluate(members)
        history.update(zip(members, accs))
        problem.on_generation(g, members, accs, ["random"] * len(members))
        g += 1
    return history
