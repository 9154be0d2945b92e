"""Phase 2: K-path evolution search under cost constraints, with BN recalibration.

    neas search --supernet runs/supernet --out runs/search --max-macs 3M --generations 10

Every candidate lies in the supernet's shrunk space and within the budget; it is scored by
ensemble top-1 on the held-out part of the training split after BN recalibration (docs/DESIGN.md
§7-8), once. Writes ``arch.json`` (the best ensemble, its costs and accuracies),
``generation_XX.json``, ``metrics.jsonl`` and ``state.json`` (``--resume`` continues).
Under torchrun the candidates of a generation are split across ranks.
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from neas import dist
from neas.cost import CostTable, cost_table
from neas.cost.latency import LatencyTable, check_table
from neas.cost.runtime import device_name
from neas.data.calibration import check_same_calibration
from neas.ensemble.latency import measure_latency_table
from neas.errors import NeasError
from neas.log import MetricLogger
from neas.records import COSTS, read_generations
from neas.rundir import RunDir, releases_run_dir, truncate_metrics
from neas.runfiles import ARCH, LATENCY_TABLE, PARETO, STATE, SUPERNET, generation_file
from neas.schemas.search import SearchConfig
from neas.search.constraints import (
    check_cascade_feasible,
    check_feasible,
    check_latency_feasible,
    describe_range,
    restrict_split,
)
from neas.search.data import heldout_batches
from neas.search.evolution import SearchProblem, evolve, random_search, sample_within
from neas.search.fitness import CandidateEvaluator, CascadePricing
from neas.search.session import SearchSession
from neas.space import ShrunkSpace
from neas.supernet import Supernet
from neas.supernet.io import SupernetFile, load_supernet
from neas.train.checkpoint import read_state

__all__ = ["SearchConfig", "search"]

log = logging.getLogger(__name__)


def _latency(cfg: SearchConfig, run: Path, space, num_classes: int, device, resuming: bool) -> LatencyTable | None:
    """The latency table of the budget: on resume, the one the search started with (so the budget
    keeps its meaning); else the user's ``--latency-table``, or one measured here. It is saved into
    the run only once the budget is known to be feasible (:func:`_keep_latency`)."""
    if not cfg.constraints.needs_latency and cfg.pareto != "latency_ms":
        return None
    path = run / LATENCY_TABLE
    if resuming and path.is_file():
        table = check_table(LatencyTable.load(path), space)
        if table.device != device_name(device) and not cfg.latency_table:
            log.warning(
                "the latency budget refers to %s, where %s was measured, not to %s",
                table.device,
                path,
                device_name(device),
            )
        return table
    if cfg.latency_table:
        return check_table(LatencyTable.load(cfg.latency_table), space)
    log.info("measuring the latency table of %r on %s (kept in %s)", space.name, device, path)
    return measure_latency_table(space, num_classes, device)


def _keep_latency(table: LatencyTable | None, run: RunDir, resuming: bool) -> None:
    if table is not None and run.main and not resuming:  # a restart replaces an earlier attempt's
        table.save(run / LATENCY_TABLE)


def _supernet_dir(supernet: str) -> Path:
    """The run directory of ``--supernet``, checked to hold a finished supernet."""
    sn_dir = Path(supernet)
    if sn_dir.is_file() and sn_dir.name.endswith(".safetensors"):
        sn_dir = sn_dir.parent  # the supernet file itself: its run directory holds the data config
    if sn_dir.exists() and not sn_dir.is_dir():
        raise NeasError(f"--supernet {sn_dir} is a file, not a train-supernet run directory")
    if not sn_dir.is_dir():
        raise NeasError(f"supernet directory {sn_dir} does not exist")
    if not (sn_dir / SUPERNET).is_file():
        raise NeasError(f"supernet directory {sn_dir} is incomplete: no {SUPERNET} (did the training finish?)")
    return sn_dir


def _setup_supernet(cfg: SearchConfig, device) -> tuple[Path, Supernet, SupernetFile, ShrunkSpace]:
    """The supernet (channels-last, in eval mode), its file info and the shrunk space searched."""
    sn_dir = _supernet_dir(cfg.supernet)
    supernet, info = load_supernet(sn_dir, device)
    supernet = supernet.to(memory_format=torch.channels_last).eval()
    return sn_dir, supernet, info, restrict_split(info.shrunk, cfg.split)


def _setup_constraints(cfg: SearchConfig, supernet: Supernet, shrunk: ShrunkSpace):
    """The cost table of the budget; a budget no ensemble of the space meets is refused before the
    run directory is touched."""
    table = cost_table(supernet.space, supernet.num_classes)
    check_feasible(cfg.constraints, table, shrunk)
    check_cascade_feasible(cfg.constraints, table, shrunk)
    if cfg.pareto == "mean_macs" and supernet.space.num_paths < 2:
        raise NeasError("pareto: mean_macs prices a cascade, and the supernet's space has K = 1 path; use macs")
    return table


def _setup_latency(cfg: SearchConfig, run: RunDir, supernet: Supernet, shrunk: ShrunkSpace) -> LatencyTable | None:
    """The latency table of the budget, rank 0's on every rank: the budget and the Pareto parents
    must agree everywhere. An impossible latency budget is refused now, not after 20 000 draws."""
    space, num_classes = supernet.space, supernet.num_classes
    mine = _latency(cfg, run, space, num_classes, run.device, run.resuming) if run.main else None
    latency = dist.broadcast_object(mine)
    if latency is not None:
        check_latency_feasible(cfg.constraints, latency, shrunk)
    _keep_latency(latency, run, run.resuming)
    return latency


def _setup_evaluator(
    cfg: SearchConfig, info: SupernetFile, supernet: Supernet, device, table: CostTable
) -> tuple[CandidateEvaluator, dict]:
    """The candidate evaluator on the held-out part (BN and scoring batches), pricing each candidate as a
    cascade when a bound or the Pareto front is on mean MACs; and its calibration record."""
    bn, val_batches, calibration = heldout_batches(
        info, device, cfg.bn_batches, cfg.batch_size, cfg.val_images, cfg.data_dir, cfg.workers, cfg.decoding
    )
    priced = cfg.constraints.needs_cascade or cfg.pareto == "mean_macs"
    c = cfg.constraints
    pricing = CascadePricing(table, c.cascade_tolerance, exit_rule=c.cascade_exit) if priced else None
    return CandidateEvaluator(supernet, bn, val_batches, cascade=pricing), calibration


def _setup_resume(
    cfg: SearchConfig, run: RunDir, session: SearchSession, calibration: dict
) -> tuple[random.Random, int]:
    """The search's random state and its first generation: fresh, or as the interrupted run left them
    (its generation files restored into the session; later metric lines dropped)."""
    rng = random.Random(f"{cfg.seed}:{cfg.strategy}")
    if not run.resuming:
        return rng, 0
    state = read_state(run)
    check_same_calibration(run, state, calibration)
    start = state["generation"] + 1
    version, internal, gauss = state["rng"]
    rng.setstate((version, tuple(internal), gauss))
    for record in read_generations(run.path, start):
        session.restore(record["members"])
    run.on_main(lambda: truncate_metrics(run.path, start - 1, "generation"))
    log.info(
        "resuming the search in %s after generation %d (%d candidates evaluated)", run, start - 1, len(session.history)
    )
    return rng, start


@dataclass(kw_only=True)
class _Search:
    """A search as this command runs it: the session, and where and how it records each generation."""

    cfg: SearchConfig
    run: RunDir
    session: SearchSession
    sn_dir: Path
    calibration: dict
    rng: random.Random
    start: int  # the first generation this process runs
    logger: MetricLogger


def _check_risk_reachable(s: _Search, g: int, members) -> None:
    """Refuses a search whose cascades are fitted by the risk rule when no candidate of its first generation
    covers any held-out scoring image at 5 % selective risk, even as a full ensemble: the rule would have
    nothing to keep anywhere, and every cascade would run every path."""
    memo = s.session.evaluator.memo
    priced = [memo[a].cascade for a in members if memo[a].cascade is not None]
    if g != 0 or s.cfg.constraints.cascade_exit != "risk" or not priced:
        return
    if all(c["full_coverage_at_5_risk"] == 0 for c in priced):
        raise NeasError(
            f"cascade_exit risk: none of the {len(priced)} ensembles of the first generation covers any of the "
            f"{s.calibration['score_images']} held-out scoring images at 5 % selective risk (their most confident "
            "predictions are wrong more than 5 % of the time), so the rule has no coverage to keep; use "
            "cascade_exit accuracy (the top-1 rule), or a better-trained supernet"
        )


def _record_generation(s: _Search, g: int, members, fits, origins) -> None:
    """Records generation ``g`` (rank 0): its file, a metric line, the resume state and a log line."""
    _check_risk_reachable(s, g, members)
    session = s.session
    session.generations_done += 1
    session.history.update(zip(members, fits))
    accs = [session.evaluator.memo[a].ensemble_acc for a in members]
    record = session.generation_record(g, members, origins)
    if not s.run.main:
        return
    best = session.evaluator.memo[session.best]
    s.run.write_json(generation_file(g), record, indent=None)
    s.logger.log(
        g,
        generation=g,
        evaluations=len(session.history),
        best_acc=best.ensemble_acc,
        best_nll=best.ensemble_nll,
        mean_acc=sum(accs) / len(accs),
        members=len(members),
    )
    state = {
        "generation": g,
        "rng": [s.rng.getstate()[0], list(s.rng.getstate()[1]), s.rng.getstate()[2]],
        "evaluations": len(session.history),
        "calibration": s.calibration,
    }
    s.run.write_json(STATE, state, indent=None)
    log.info(
        "generation %d: %d candidates, best (by %s) %.2f%% / NLL %.4f, mean %.2f%% (%d evaluated)",
        g,
        len(members),
        s.cfg.objective,
        100 * best.ensemble_acc,
        best.ensemble_nll,
        100 * sum(accs) / len(accs),
        len(session.history),
    )


def _run_generations(s: _Search) -> None:
    """The search: generation after generation of the strategy, each recorded by :func:`_record_generation`."""
    cfg, constraints, session = s.cfg, s.cfg.constraints, s.session
    if s.run.main:
        log.info(
            "search: %s in space %r (%d combinations left), %d held-out images, constraints %s",
            cfg.strategy,
            session.space.name,
            session.shrunk.num_combinations,
            s.calibration["score_images"],
            constraints.active() or "none",
        )
    if sample_within(session.shrunk, random.Random(0), session.ok, tries=20_000) is None and not session.history:
        raise NeasError(
            f"no ensemble found within the constraints {constraints.active()} after 20000 random draws; "
            f"{describe_range(session.table, session.shrunk)}"
        )
    problem = SearchProblem(session.ok, session.evaluate, functools.partial(_record_generation, s))
    shrunk, history = session.shrunk, session.history
    if cfg.strategy == "evolution":
        # a front anchored at the cheapest ensemble meets every budget the space can meet (neas run budgets:)
        anchors = (session.table.extremes(shrunk, cfg.pareto)[0],) if cfg.pareto in COSTS else ()
        parents = session.pareto_parents if cfg.pareto else None
        session.history = evolve(
            shrunk, cfg.evolution, problem, s.rng, s.start, history, select_parents=parents, anchors=anchors
        )
    else:
        budget = cfg.evaluations or cfg.evolution.population * cfg.evolution.generations
        session.history = random_search(shrunk, budget, cfg.evolution.population, problem, s.rng, s.start, history)


def _write_results(s: _Search) -> None:
    """Writes (rank 0) the Pareto front when asked for, then the best ensemble."""
    session, cfg = s.session, s.cfg
    result = session.result(str(s.sn_dir), s.calibration)
    if not s.run.main:
        return
    if cfg.pareto:
        pareto = session.pareto_record()
        s.run.write_json(PARETO, pareto)
        front = pareto["front"]
        log.info(
            "Pareto front of %s vs %s: %d ensembles from %s to %s",
            cfg.objective,
            cfg.pareto,
            len(front),
            front[0][cfg.pareto],
            front[-1][cfg.pareto],
        )
    s.run.write_json(ARCH, result)
    log.info(
        "best ensemble (by %s): %s  acc %.2f%%  NLL %.4f  %.3fM MACs  %.3fM params",
        cfg.objective,
        session.best,
        100 * result["supernet_acc"],
        result["supernet_nll"],
        result["macs"] / 1e6,
        result["params"] / 1e6,
    )


@releases_run_dir
def search(cfg: SearchConfig) -> Path:
    """Runs (or resumes) the search; returns the output directory."""
    device = dist.init(cfg.device)
    sn_dir, supernet, info, shrunk = _setup_supernet(cfg, device)
    table = _setup_constraints(cfg, supernet, shrunk)
    run = RunDir.open(cfg, "search", device)
    latency = _setup_latency(cfg, run, supernet, shrunk)
    evaluator, calibration = _setup_evaluator(cfg, info, supernet, device, table)
    session = SearchSession(
        constraints=cfg.constraints,
        objective=cfg.objective,
        strategy=cfg.strategy,
        pareto=cfg.pareto,
        space=supernet.space,
        num_classes=supernet.num_classes,
        shrunk=shrunk,
        table=table,
        latency=latency,
        evaluator=evaluator,
    )
    rng, start = _setup_resume(cfg, run, session, calibration)
    session.generations_done = start
    s = _Search(
        cfg=cfg, run=run, session=session, sn_dir=sn_dir, calibration=calibration, rng=rng, start=start,
        logger=MetricLogger(run),
    )  # fmt: skip
    _run_generations(s)
    _write_results(s)
    s.logger.close()
    dist.barrier()
    return run.path
