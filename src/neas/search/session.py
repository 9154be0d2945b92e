"""A search as it runs: the candidates' costs and scores, the problem evolution works on, and the
records a search writes (a generation's, the best ensemble's, the Pareto front's).

The recipe (``neas search``) builds one :class:`SearchSession` from the supernet, the budget and the
held-out images, hands :meth:`SearchSession.ok`, :meth:`SearchSession.evaluate` and
:meth:`SearchSession.pareto_parents` to :mod:`neas.search.evolution`, and writes what the record
methods return. Under torchrun each rank scores its share of a generation (:meth:`evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm import tqdm

from neas import dist
from neas.cost import CostTable
from neas.cost.latency import LatencyTable
from neas.search.constraints import measure_costs
from neas.search.fitness import CandidateEvaluator, Evaluation
from neas.search.pareto import front_indices, nsga2_select
from neas.search.settings import Constraints
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace

__all__ = ["SearchSession", "scores"]


INFEASIBLE = -1e6  # added to the fitness of a candidate whose priced cascade breaks a mean-MACs bound


def scores(e: Evaluation) -> dict:
    """A candidate's one-shot numbers as the search's records store them (and its priced cascade)."""
    out = {
        "ensemble_acc": e.ensemble_acc,
        "ensemble_nll": e.ensemble_nll,
        "ensemble_aurc": e.ensemble_aurc,
        "path_acc": list(e.path_acc),
    }
    if e.cascade is not None:
        out["cascade"] = e.cascade
    return out


@dataclass(kw_only=True)
class SearchSession:
    """The state of one search: its budget and objective, the supernet's space, the tables that
    price an ensemble, the evaluator, and every candidate evaluated so far with its fitness."""

    constraints: Constraints
    objective: str  # top1 | nll | aurc
    strategy: str  # evolution | random
    pareto: str | None  # the cost of the Pareto front (None: a single best)
    space: SearchSpace
    num_classes: int
    shrunk: ShrunkSpace
    table: CostTable  # MACs, paper FLOPs, params
    latency: LatencyTable | None
    evaluator: CandidateEvaluator
    history: dict[EnsembleArch, float] = field(default_factory=dict)  # every candidate evaluated -> its fitness
    costs_of: dict = field(default_factory=dict)
    generations_done: int = 0

    def ok(self, arch: EnsembleArch) -> bool:
        """Whether ``arch`` meets the constraints (its costs measured once). A bound on the cascade's mean
        MACs is known only once the candidate is scored (:meth:`evaluate`); before, ``arch`` is refused only
        when its cheapest path alone costs more."""
        if arch not in self.costs_of:
            self.costs_of[arch] = measure_costs(self.constraints, arch, self.table, self.latency)
        hi = self.constraints.max_mean_macs
        if hi is not None and "mean_macs" not in self.costs_of[arch] and self.table.first_step_floor(arch) > hi:
            return False
        return self.constraints.satisfied(self.costs_of[arch])

    def feasible(self, arch: EnsembleArch) -> bool:
        """Whether a scored candidate meets every bound, its priced cascade's included."""
        return self.constraints.satisfied(self.costs_of[arch])

    def evaluate(self, archs: list[EnsembleArch]) -> list[float]:
        """The fitness of each of ``archs``: each rank evaluates its share, all gather the results."""
        rank, world = dist.get_rank(), dist.get_world_size()
        bar = tqdm(
            total=len(archs),
            desc=f"generation {self.generations_done}",
            leave=False,
            disable=None if dist.is_main_process() else True,
        )
        bar.set_postfix(best=f"{max(self.history.values(), default=0.0):.1%}")
        mine = {}
        for i in range(rank, len(archs), world):
            mine[i] = self.evaluator.evaluate(archs[i])
            bar.update(world)
        bar.close()
        results = {}
        for part in dist.all_gather_object(mine):
            results.update(part)
        for i, res in results.items():
            self.evaluator.memo[archs[i]] = res
        return [self._fitness(archs[i], results[i]) for i in range(len(archs))]

    def _fitness(self, arch: EnsembleArch, res: Evaluation) -> float:
        """The objective; with a priced cascade its mean MACs join the costs, and a candidate over a
        mean-MACs bound ranks below every feasible one (by its objective among the infeasible)."""
        self.ok(arch)  # its static costs (measured once)
        if res.mean_macs is not None:
            self.costs_of[arch]["mean_macs"] = res.mean_macs
        fitness = res.fitness(self.objective)
        return fitness if self.feasible(arch) else fitness + INFEASIBLE

    def objectives(self, archs) -> list[tuple[float, float]]:
        """The Pareto objectives of ``archs``, minimised: (-fitness, cost)."""
        for a in archs:
            self.ok(a)  # measures it (members restored on resume were measured in an earlier process)
        return [(-self.history[a], self.costs_of[a][self.pareto]) for a in archs]

    def pareto_parents(self, history, k: int) -> list[EnsembleArch]:
        archs = list(history)
        return [archs[i] for i in nsga2_select(self.objectives(archs), k)]

    def restore(self, members: list[dict]) -> None:
        """Takes back the candidates of a recorded generation (on resume): their scores, costs and fitness."""
        for m in members:
            arch = EnsembleArch.from_json(m)
            nll, aurc = m.get("ensemble_nll", float("nan")), m.get("ensemble_aurc", float("nan"))
            res = Evaluation(m["ensemble_acc"], tuple(m["path_acc"]), nll, aurc, m.get("mean_macs"), m.get("cascade"))
            self.evaluator.memo[arch] = res
            self.history[arch] = self._fitness(arch, res)

    @property
    def best(self) -> EnsembleArch:
        """The fittest candidate that meets every bound (the fittest of all when none does yet)."""
        feasible = [a for a in self.history if self.feasible(a)] or list(self.history)
        return max(feasible, key=lambda a: self.history[a])

    def generation_record(self, g: int, members, origins) -> dict:
        """``generation_XX.json``: every member with its origin, costs and scores, and the best so far."""
        memo, best = self.evaluator.memo, self.best
        return {
            "generation": g,
            "strategy": self.strategy,
            "objective": self.objective,
            "members": [
                {**a.to_json(), "origin": o, **self.costs_of[a], **scores(memo[a])} for a, o in zip(members, origins)
            ],
            "best": {**best.to_json(), **scores(memo[best])},
            "evaluations": len(self.history),
        }

    def result(self, supernet: str, calibration: dict) -> dict:
        """``arch.json``: the best ensemble, its costs and scores, and every candidate, best first."""
        memo, best = self.evaluator.memo, self.best
        ranked = sorted(self.history, key=lambda a: -self.history[a])
        return {
            **best.to_json(),
            **(self.costs_of.get(best) or measure_costs(self.constraints, best, self.table, self.latency)),
            **({"cascade": memo[best].cascade} if memo[best].cascade is not None else {}),
            "supernet_acc": memo[best].ensemble_acc,
            "supernet_nll": memo[best].ensemble_nll,
            "supernet_aurc": memo[best].ensemble_aurc,
            "objective": self.objective,
            "path_acc": list(memo[best].path_acc),
            "num_classes": self.num_classes,
            "space": self.space.to_dict(),
            "strategy": self.strategy,
            "evaluations": len(self.history),
            "constraints": self.constraints.active(),
            "supernet": supernet,
            "calibration": calibration,
            # every candidate, best first by the objective, with both numbers
            "candidates": [{**a.to_json(), **scores(memo[a])} for a in ranked],
        }

    def pareto_record(self) -> dict:
        """``pareto.json``: the front of the objective vs the ``pareto`` cost over every candidate evaluated
        that meets every bound."""
        archs = [a for a in self.history if self.feasible(a)]
        on_front = [archs[i] for i in front_indices(self.objectives(archs))]
        front = [
            {**a.to_json(), **self.costs_of[a], **scores(self.evaluator.memo[a]), "fitness": self.history[a]}
            for a in on_front
        ]
        return {
            "metric": self.pareto,
            "objective": self.objective,
            "strategy": self.strategy,
            "evaluations": len(self.history),
            "constraints": self.constraints.active(),
            "space": self.space.to_dict(),
            "num_classes": self.num_classes,
            "front": front,
        }
