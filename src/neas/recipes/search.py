"""Phase 2: K-path evolution search under cost constraints, with BN recalibration.

    neas search --supernet runs/supernet --out runs/search --max-macs 3M --generations 10

Every candidate lies in the supernet's shrunk space and within the budget; it is scored by
ensemble top-1 on the held-out part of the training split after BN recalibration (docs/DESIGN.md
§7-8), once. Writes ``arch.json`` (the best ensemble, its costs and accuracies),
``generation_XX.json``, ``metrics.jsonl`` and ``state.json`` (``--resume`` continues).
Under torchrun the candidates of a generation are split across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from neas import dist
from neas.config import option, validate_fields
from neas.cost import cost_table
from neas.cost.latency import LatencyTable, check_table, device_name, measure_latency_table
from neas.data.calibration import check_same_calibration
from neas.errors import NeasError, suggest
from neas.log import MetricLogger
from neas.options import DecodeOptions, RunOptions, ScoringOptions
from neas.search.constraints import Constraints
from neas.search.data import heldout_batches
from neas.search.evolution import EvolutionSettings, evolve, random_search, sample_within
from neas.search.fitness import OBJECTIVES, CandidateEvaluator, Evaluation
from neas.search.pareto import PARETO_METRICS, front_indices, nsga2_select
from neas.space import EnsembleArch, ShrunkSpace
from neas.supernet.io import load_supernet
from neas.train.checkpoint import read_state
from neas.rundir import ARCH, LATENCY_TABLE, PARETO, STATE, SUPERNET, RunDir, generation_file, read_generations, releases_run_dir, truncate_metrics

__all__ = ["SearchConfig", "search"]

log = logging.getLogger(__name__)

STRATEGIES = ("evolution", "random")


@dataclass
class SearchConfig(RunOptions, ScoringOptions, DecodeOptions):
    """The schema of ``neas search``: every field is a YAML key and a flag."""

    supernet: str = option("runs/supernet", "the supernet-training run directory")
    out: str = option("runs/search", "search directory")
    strategy: str = option("evolution", "evolution | random")
    objective: str = option("top1", "what candidates are ranked by on the held-out part: top1 (the paper's) | nll (ensemble NLL)")
    pareto: "str | None" = option(None, "evolve the whole front of the objective vs this cost (NSGA-II), written to pareto.json: "
                                        "macs | paper_flops | params | latency_ms", default_help="one budget, one best ensemble")
    constraints: Constraints = option(default_factory=Constraints, prefix="")
    split: "list[int] | None" = option(None, "search only split points LO [HI] (0: no shared layers)",
                                       default_help="the space's range")
    evolution: EvolutionSettings = option(default_factory=EvolutionSettings, prefix="")
    evaluations: "int | None" = option(None, "random search: candidates", default_help="population x generations", valid=">= 1")
    val_images: "int | None" = option(None, "held-out images per candidate (a stratified subset)", default_help="all", valid=">= 1")
    latency_table: "str | None" = option(None, "a `neas latency-table` file for the latency budget (e.g. measured in onnxruntime on the "
                                               "target)", default_help="measured here in torch")
    data_dir: "str | None" = option(None, "where the supernet's dataset lives now", default_help="as trained")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise NeasError(f"strategy: unknown {self.strategy!r}{suggest(self.strategy, STRATEGIES)}; choose {' or '.join(STRATEGIES)}")
        if self.pareto is not None and self.pareto not in PARETO_METRICS:
            raise NeasError(f"pareto: unknown cost {self.pareto!r}{suggest(self.pareto, PARETO_METRICS)}; choose {', '.join(PARETO_METRICS)}")
        if self.objective not in OBJECTIVES:
            raise NeasError(f"objective: unknown {self.objective!r}{suggest(self.objective, OBJECTIVES)}; choose {' or '.join(OBJECTIVES)}")
        if self.split is not None and len(self.split) == 1:
            self.split = [self.split[0], self.split[0]]
        if self.split is not None and (len(self.split) != 2 or not 0 <= self.split[0] <= self.split[1]):
            raise NeasError(f"split must be [lo, hi] with 0 <= lo <= hi, got {self.split}")
        validate_fields(self)


def _scores(e: Evaluation) -> dict:
    return {"ensemble_acc": e.ensemble_acc, "ensemble_nll": e.ensemble_nll, "path_acc": list(e.path_acc)}


def _restrict_split(shrunk: ShrunkSpace, split: "list[int] | None") -> ShrunkSpace:
    """The shrunk space with its split range narrowed to ``split`` (inside the supernet's range)."""
    if split is None:
        return shrunk
    lo, hi = shrunk.space.split
    if not lo <= split[0] <= split[1] <= hi:
        raise NeasError(f"split {list(split)} is outside the supernet space's split range [{lo}, {hi}]")
    return ShrunkSpace(dataclasses.replace(shrunk.space, split=tuple(split)), shrunk.combinations)


def _latency(cfg: SearchConfig, run: Path, space, num_classes: int, device, resuming: bool) -> "LatencyTable | None":
    """The latency table of the budget: on resume, the one the search started with (so the budget
    keeps its meaning); else the user's ``--latency-table``, or one measured here. It is saved into
    the run only once the budget is known to be feasible (:func:`_keep_latency`)."""
    if not cfg.constraints.needs_latency and cfg.pareto != "latency_ms":
        return None
    path = run / LATENCY_TABLE
    if resuming and path.is_file():
        table = check_table(LatencyTable.load(path), space)
        if table.device != device_name(device) and not cfg.latency_table:
            log.warning("the latency budget refers to %s, where %s was measured, not to %s", table.device, path, device_name(device))
        return table
    if cfg.latency_table:
        return check_table(LatencyTable.load(cfg.latency_table), space)
    log.info("measuring the latency table of %r on %s (kept in %s)", space.name, device, path)
    return measure_latency_table(space, num_classes, device)


def _keep_latency(table: "LatencyTable | None", run: RunDir, resuming: bool) -> None:
    if table is not None and run.main and not resuming:  # a restart replaces an earlier attempt's
        table.save(run / LATENCY_TABLE)


def _describe_range(table, shrunk) -> str:
    lo, hi = table.range(shrunk, "macs")
    plo, phi = table.range(shrunk, "params")
    return f"the space's ensembles span {lo / 1e6:.3f}M-{hi / 1e6:.3f}M MACs and {plo / 1e6:.3f}M-{phi / 1e6:.3f}M params"


def _check_feasible(constraints: Constraints, table, shrunk) -> None:
    for metric in ("macs", "paper_flops", "params"):
        lo_c, hi_c = getattr(constraints, f"min_{metric}"), getattr(constraints, f"max_{metric}")
        lo, hi = table.range(shrunk, metric)
        if (hi_c is not None and hi_c < lo) or (lo_c is not None and lo_c > hi):
            bound = f"max_{metric}={hi_c}" if hi_c is not None and hi_c < lo else f"min_{metric}={lo_c}"
            cheapest, dearest = table.extremes(shrunk, metric)
            raise NeasError(
                f"no ensemble of the space meets {bound}: the cheapest has {metric}={lo} ({cheapest}), the most expensive {hi} "
                f"({dearest}); {_describe_range(table, shrunk)}"
            )


@releases_run_dir
def search(cfg: SearchConfig) -> Path:
    """Runs (or resumes) the search; returns the output directory."""
    device = dist.init(cfg.device)
    sn_dir = Path(cfg.supernet)
    if sn_dir.is_file() and sn_dir.name.endswith(".safetensors"):
        sn_dir = sn_dir.parent  # the supernet file itself: its run directory holds the data config
    if sn_dir.exists() and not sn_dir.is_dir():
        raise NeasError(f"--supernet {sn_dir} is a file, not a train-supernet run directory")
    if not sn_dir.is_dir():
        raise NeasError(f"supernet directory {sn_dir} does not exist")
    if not (sn_dir / SUPERNET).is_file():
        raise NeasError(f"supernet directory {sn_dir} is incomplete: no {SUPERNET} (did the training finish?)")
    supernet, info = load_supernet(sn_dir, device)
    shrunk = info.shrunk
    supernet = supernet.to(memory_format=torch.channels_last).eval()
    space, num_classes = supernet.space, supernet.num_classes
    shrunk = _restrict_split(shrunk, cfg.split)
    constraints = cfg.constraints
    table = cost_table(space, num_classes)
    _check_feasible(constraints, table, shrunk)
    run = RunDir.open(cfg, "search", device)
    resuming = run.resuming
    # one table for every rank: the budget and the Pareto parents must agree everywhere
    latency = dist.broadcast_object(_latency(cfg, run, space, num_classes, device, resuming) if run.main else None)
    if latency is not None:  # an impossible latency budget is refused now, not after 20 000 draws
        fastest, slowest = latency.bounds(shrunk, constraints.latency_mode)
        lo_c, hi_c = constraints.min_latency_ms, constraints.max_latency_ms
        if (hi_c is not None and hi_c < fastest) or (lo_c is not None and lo_c > slowest):
            quick = latency.fastest(shrunk)
            raise NeasError(f"no ensemble of the space meets {constraints.active()}: on {latency.device} ({latency.runtime}) the fastest "
                            f"takes at least {fastest:.3f} ms (e.g. {quick}: {latency.latency_ms(quick, constraints.latency_mode):.3f} ms) and "
                            f"the slowest at most {slowest:.3f} ms ({constraints.latency_mode} paths)")
    _keep_latency(latency, run, resuming)
    bn, val_batches, calibration = heldout_batches(info, device, cfg.bn_batches, cfg.batch_size, cfg.val_images, cfg.data_dir, cfg.workers,
                                                  cfg.decoding)
    evaluator = CandidateEvaluator(supernet, bn, val_batches)
    costs_of = {}

    def ok(arch: EnsembleArch) -> bool:
        if arch not in costs_of:
            costs_of[arch] = constraints.measure(arch, table, latency)
        return constraints.satisfied(costs_of[arch])

    rng = random.Random(f"{cfg.seed}:{cfg.strategy}")
    history, start = {}, 0
    if resuming:
        state = read_state(run)
        check_same_calibration(run, state, calibration)
        start = state["generation"] + 1
        version, internal, gauss = state["rng"]
        rng.setstate((version, tuple(internal), gauss))
        for record in read_generations(run.path, start):
            for m in record["members"]:
                arch = EnsembleArch.from_json(m)
                evaluator.memo[arch] = Evaluation(m["ensemble_acc"], tuple(m["path_acc"]), m.get("ensemble_nll", float("nan")))
                history[arch] = evaluator.memo[arch].fitness(cfg.objective)
        run.on_main(lambda: truncate_metrics(run.path, start - 1, "generation"))
        log.info("resuming the search in %s after generation %d (%d candidates evaluated)", run, start - 1, len(history))

    def evaluate(archs: list[EnsembleArch]) -> list[float]:
        rank, world = dist.get_rank(), dist.get_world_size()
        bar = tqdm(total=len(archs), desc=f"generation {len(generations_done)}", leave=False, disable=None if run.main else True)
        bar.set_postfix(best=f"{max(history.values(), default=0.0):.1%}")
        mine = {}
        for i in range(rank, len(archs), world):
            mine[i] = evaluator.evaluate(archs[i])
            bar.update(world)
        bar.close()
        results = {}
        for part in dist.all_gather_object(mine):
            results.update(part)
        for i, res in results.items():
            evaluator.memo[archs[i]] = res
        return [results[i].fitness(cfg.objective) for i in range(len(archs))]

    generations_done = list(range(start))
    logger = MetricLogger(run)

    def on_generation(g, members, fits, origins):
        generations_done.append(g)
        history.update(zip(members, fits))
        best_arch = max(history, key=lambda a: history[a])
        accs = [evaluator.memo[a].ensemble_acc for a in members]
        record = {
            "generation": g,
            "strategy": cfg.strategy,
            "objective": cfg.objective,
            "members": [{**a.to_json(), "origin": o, **costs_of[a], **_scores(evaluator.memo[a])} for a, o in zip(members, origins)],
            "best": {**best_arch.to_json(), **_scores(evaluator.memo[best_arch])},
            "evaluations": len(history),
        }
        if run.main:
            run.write_json(generation_file(g), record, indent=None)
            logger.log(g, generation=g, evaluations=len(history), best_acc=evaluator.memo[best_arch].ensemble_acc,
                       best_nll=evaluator.memo[best_arch].ensemble_nll, mean_acc=sum(accs) / len(accs), members=len(members))
            state = {"generation": g, "rng": [rng.getstate()[0], list(rng.getstate()[1]), rng.getstate()[2]], "evaluations": len(history),
                     "calibration": calibration}
            run.write_json(STATE, state, indent=None)
            best = evaluator.memo[best_arch]
            log.info("generation %d: %d candidates, best (by %s) %.2f%% / NLL %.4f, mean %.2f%% (%d evaluated)",
                     g, len(members), cfg.objective, 100 * best.ensemble_acc, best.ensemble_nll, 100 * sum(accs) / len(accs), len(history))

    if run.main:
        log.info("search: %s in space %r (%d combinations left), %d held-out images, constraints %s",
                 cfg.strategy, space.name, shrunk.num_combinations, calibration["score_images"], constraints.active() or "none")
    if sample_within(shrunk, random.Random(0), ok, tries=20_000) is None and not history:
        raise NeasError(f"no ensemble found within the constraints {constraints.active()} after 20000 random draws; {_describe_range(table, shrunk)}")
    def objectives(archs):  # minimised: (-fitness, cost)
        for a in archs:
            ok(a)  # measures it (members restored on resume were measured in an earlier process)
        return [(-history[a], costs_of[a][cfg.pareto]) for a in archs]

    def pareto_parents(history, k):
        archs = list(history)
        return [archs[i] for i in nsga2_select(objectives(archs), k)]

    if cfg.strategy == "evolution":
        # a front anchored at the cheapest ensemble meets every budget the space can meet (neas run budgets:)
        anchors = (table.extremes(shrunk, cfg.pareto)[0],) if cfg.pareto in ("macs", "paper_flops", "params") else ()
        history = evolve(shrunk, cfg.evolution, ok, evaluate, rng, on_generation, start, history,
                         select_parents=pareto_parents if cfg.pareto else None, anchors=anchors)
    else:
        budget = cfg.evaluations or cfg.evolution.population * cfg.evolution.generations
        history = random_search(shrunk, budget, cfg.evolution.population, ok, evaluate, rng, on_generation, start, history)
    best = max(history, key=lambda a: history[a])
    ranked = sorted(history, key=lambda a: -history[a])
    result = {
        **best.to_json(),
        **(costs_of.get(best) or constraints.measure(best, table, latency)),
        "supernet_acc": evaluator.memo[best].ensemble_acc,
        "supernet_nll": evaluator.memo[best].ensemble_nll,
        "objective": cfg.objective,
        "path_acc": list(evaluator.memo[best].path_acc),
        "num_classes": num_classes,
        "space": space.to_dict(),
        "strategy": cfg.strategy,
        "evaluations": len(history),
        "constraints": constraints.active(),
        "supernet": str(sn_dir),
        "calibration": calibration,
        # every candidate, best first by the objective, with both numbers
        "candidates": [{**a.to_json(), **_scores(evaluator.memo[a])} for a in ranked],
    }
    if run.main:
        if cfg.pareto:
            archs = list(history)
            front = [{**archs[i].to_json(), **costs_of[archs[i]], **_scores(evaluator.memo[archs[i]]), "fitness": history[archs[i]]}
                     for i in front_indices(objectives(archs))]
            pareto = {"metric": cfg.pareto, "objective": cfg.objective, "strategy": cfg.strategy, "evaluations": len(history),
                      "constraints": constraints.active(), "space": space.to_dict(), "num_classes": num_classes, "front": front}
            run.write_json(PARETO, pareto)
            log.info("Pareto front of %s vs %s: %d ensembles from %s to %s", cfg.objective, cfg.pareto, len(front),
                     front[0][cfg.pareto], front[-1][cfg.pareto])
        run.write_json(ARCH, result)
        log.info("best ensemble (by %s): %s  acc %.2f%%  NLL %.4f  %.3fM MACs  %.3fM params", cfg.objective, best,
                 100 * result["supernet_acc"], result["supernet_nll"], result["macs"] / 1e6, result["params"] / 1e6)
    logger.close()
    dist.barrier()
    return run.path
