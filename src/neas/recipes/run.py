"""``neas run``: the whole pipeline in one run directory — supernet training with shrinking,
evolution search under the budget (and, optionally, random search at equal evaluations),
retraining, evaluation on the test split, and the report.

    neas run                                  # the demo: digits, the tiny space, a few minutes on 2 CPU cores
    neas run --config configs/cifar10.yaml --out runs/cifar10
    neas run --config configs/demo.yaml --out runs/demo --resume

Each stage lives in its own sub-directory (``supernet/``, ``search/``, ``search_random/``,
``retrain/``, ``report/``). A finished stage is skipped; an interrupted one resumes from its
last checkpoint, so ``--resume`` continues where the run stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from neas import dist
from neas.config import flat_fields, from_dict
from neas.cost import parse_amount
from neas.data.datasets import scan_split
from neas.data.split import holdout_split
from neas.errors import NeasError
from neas.executor import check_executor, job_options, run_jobs, stage_job
from neas.io import read_json
from neas.outputs import resumes
from neas.pipeline import run_stage
from neas.recipes.retrain import RetrainConfig, retrain
from neas.recipes.search import SearchConfig, search
from neas.recipes.train_supernet import SupernetConfig, train_supernet
from neas.records import Summary, read_arch, read_eval
from neas.rundir import (
    NOT_COMPARED as _ALWAYS_IGNORED,
)
from neas.rundir import RunDir
from neas.runfiles import ARCH, BUDGETS, EVAL, JOB_LOGS, MODEL, PARETO, RETRAIN_STAGE, SUMMARY, SUPERNET, PipelineLayout
from neas.schemas.run import DEMO, RunConfig
from neas.search.constraints import check_budget, check_cascade_paths
from neas.search.pareto import pick_for_budgets
from neas.search.settings import COST_METRICS
from neas.space import SearchSpace
from neas.train.recipe import check_global_batch

__all__ = [
    "DEMO",
    "RunConfig",
    "budget_folder",
    "budget_value",
    "checked_stage_configs",
    "run_pipeline",
    "stage_configs",
]

log = logging.getLogger(__name__)


_SHARED = ("space", "data", "data_dir", "download", "decode", "max_memory_gb", "seed", "device")
# not compared on --resume at the top: each stage checks its own section (a stage that has not started
# may be corrected; a finished one is never reused under other settings), and random search may be added
NOT_COMPARED = (*_ALWAYS_IGNORED, "compare_random", "supernet", "search", "retrain", "budgets", "dry_run")


def stage_configs(cfg: RunConfig) -> tuple[SupernetConfig, SearchConfig, RetrainConfig]:
    """The three stages' configs: each section's keys, plus the shared keys its schema has and
    the paths `neas run` sets itself (which a section may not set)."""
    run = PipelineLayout(Path(cfg.out))
    own = {
        "supernet": (SupernetConfig, {"out": str(run.supernet)}),
        "search": (SearchConfig, {"supernet": str(run.supernet), "out": str(run.search)}),
        "retrain": (RetrainConfig, {"arch": str(run.search / ARCH), "out": str(run.retrain)}),
    }
    configs = []
    for section, (cls, paths) in own.items():
        keys = {ff.key for ff in flat_fields(cls)}
        fixed = {**{k: getattr(cfg, k) for k in _SHARED if k in keys}, **paths}
        for key in getattr(cfg, section):
            if key in fixed or key == "resume":
                raise NeasError(
                    f"{section}.{key}: set by `neas run` itself{' (use the top-level key)' if key in _SHARED else ''}"
                )
        if section == "search" and cfg.budgets:  # one search for every budget: its Pareto front on the metric
            fixed["pareto"] = cfg.budget_metric
        configs.append(from_dict(cls, {**getattr(cfg, section), **fixed}, section))
    return _follow_cascade_budget(cfg, *configs)


CASCADE_HOLDOUT = 0.1  # the held-out part a retraining fits its cascade on, when a cascade budget asks for one


def _follow_cascade_budget(cfg: RunConfig, sn, se, rt) -> tuple[SupernetConfig, SearchConfig, RetrainConfig]:
    """With a budget on the cascade's mean MACs, the retraining fits the winner's cascade on a held-out
    part (``retrain.cascade``, ``retrain.holdout`` 0.1 unless set, the search's exit rule): set for the
    user, or refused when the retrain section says otherwise."""
    if not (se.constraints.needs_cascade or (cfg.budgets and cfg.budget_metric == "mean_macs")):
        return sn, se, rt
    given = cfg.retrain
    for key, wrong in (("cascade", False), ("holdout", 0), ("eval_split", "holdout")):
        if key in given and given[key] == wrong:
            raise NeasError(
                f"retrain.{key}: {wrong!r} leaves no cascade to deploy, and the search is held to the cascade's mean "
                "MACs; the retraining fits it on a held-out part of the training split"
            )
    return (
        sn,
        se,
        dataclasses.replace(
            rt,
            cascade=True,
            holdout=rt.holdout or CASCADE_HOLDOUT,
            cascade_tolerance=given.get("cascade_tolerance", se.constraints.cascade_tolerance),
            cascade_exit=given.get("cascade_exit", se.constraints.cascade_exit),
        ),
    )


def budget_value(metric: str, text: str) -> float:
    """The number a ``budgets:`` entry stands for (an amount such as 1.5M; milliseconds for latency)."""
    try:
        return float(text) if metric == "latency_ms" else float(parse_amount(text))
    except (ValueError, NeasError):
        raise NeasError(
            f"budgets: {text!r} is not a {metric} amount (e.g. 1.5M{' or 12.5' if metric == 'latency_ms' else ''})"
        ) from None


def budget_folder(metric: str, text: str) -> str:
    """Where a ``neas run`` puts the pick and retraining of one budget, relative to the run directory."""
    return f"{BUDGETS}/{metric}_{text}"


def _budget_stages(cfg: RunConfig, run: RunDir, rt: RetrainConfig) -> dict:
    """Picks the best member of the search's Pareto front within each budget and writes its
    ``budgets/<metric>_<budget>/arch.json``; returns budget -> (value, member, retrain config)."""
    pareto = read_json(PipelineLayout(run.path).search / PARETO, "Pareto front", ("front", "space"))
    values = {text: budget_value(cfg.budget_metric, text) for text in cfg.budgets}
    picks = pick_for_budgets(pareto["front"], list(values.values()), cfg.budget_metric)
    stages = {}
    for text, value in values.items():
        member = picks[value]
        name = budget_folder(cfg.budget_metric, text)
        folder = run / name
        arch = {
            **{k: member[k] for k in ("split", "paths", "distinct") if k in member},
            "space": pareto["space"],
            "path_acc": member["path_acc"],
            "supernet_acc": member["ensemble_acc"],
            "budget": {cfg.budget_metric: value},
            **{k: member[k] for k in COST_METRICS if k in member},
        }
        if not (folder / ARCH).is_file():
            run.write_json(f"{name}/{ARCH}", arch)
        stages[text] = (
            value,
            member,
            dataclasses.replace(rt, arch=str(folder / ARCH), out=str(PipelineLayout(folder).retrain)),
        )
    dist.barrier()
    return stages


def _run_budget_stages(cfg: RunConfig, run: RunDir, stages: dict) -> None:
    """Each budget's retraining: jobs of ``cfg.executor`` (finished ones skipped, interrupted ones
    resumed); under torchrun, every process takes part in each, in this process group, in turn."""
    retrains = {f"retrain within {cfg.budget_metric} {text}": stage for text, (_, _, stage) in stages.items()}
    if dist.get_world_size() > 1:
        for name, stage in retrains.items():
            run_stage(Path(stage.out), [MODEL, EVAL], retrain, stage, name)
        return
    jobs = [
        stage_job("retrain", stage, Path(stage.out), [MODEL, EVAL], Path(stage.out).parent / "retrain.yaml", name)
        for name, stage in retrains.items()
    ]
    todo = [job for job in jobs if job is not None]
    if todo:
        run_jobs(todo, log_dir=run / JOB_LOGS, **job_options(cfg))


def _retrain_budgets(cfg: RunConfig, run: RunDir, rt: RetrainConfig) -> list[dict]:
    """Retrains the best member of the search's Pareto front within each budget in
    ``budgets/<metric>_<budget>/retrain`` (resumable); returns one record per budget."""
    stages = _budget_stages(cfg, run, rt)
    _run_budget_stages(cfg, run, stages)
    records = []
    for text, (value, member, stage) in stages.items():
        result = read_eval(Path(stage.out) / EVAL)
        records.append(
            {
                "budget": text,
                "metric": cfg.budget_metric,
                "arch": {"split": member["split"], "paths": member["paths"]},
                "supernet_acc": member["ensemble_acc"],
                "test_top1": result.top1,
                "test_nll": result.ensemble["nll"],
                "macs": member["macs"],
                "params": member["params"],
                "dir": str(Path(stage.out).parent),
                "value": value,
            }
        )
    return records


def _check_executor(cfg: RunConfig) -> None:
    """What would stop the budgets' retrainings, refused before anything is trained."""
    if not cfg.budgets:
        return
    check_executor(cfg.executor, cfg.slurm)
    if cfg.executor != "debug" and dist.get_world_size() > 1:
        raise NeasError(
            f"--executor {cfg.executor}: under torchrun every process takes part in each budget's retraining; "
            "use --executor debug (the default), or run without torchrun"
        )


def checked_stage_configs(cfg: RunConfig) -> tuple[SupernetConfig, SearchConfig, RetrainConfig]:
    """The stages' configs (:func:`stage_configs`; with ``budgets``, the search's Pareto front), after
    every check a run makes before training: the real run and ``--dry-run`` refuse the same configs."""
    sn, se, rt = stage_configs(cfg)
    if cfg.budgets:  # one search for every budget: its Pareto front
        for text in cfg.budgets:
            budget_value(cfg.budget_metric, text)
        se = dataclasses.replace(se, pareto=cfg.budget_metric)
    _check_before_training(sn, se, rt)
    _check_executor(cfg)
    return sn, se, rt


def run_pipeline(cfg: RunConfig) -> dict:
    """Runs every stage; returns the final summary (also written to ``summary.json``)."""
    sn, se, rt = checked_stage_configs(cfg)
    if rt.cascade and "cascade" not in cfg.retrain:
        log.info(
            "the search is held to the cascade's mean MACs: the retraining fits the winner's cascade on a held-out "
            "%g of the training split (retrain.cascade, retrain.holdout %g, exit rule %s, tolerance %g points)",
            rt.holdout,
            rt.holdout,
            rt.cascade_exit,
            rt.cascade_tolerance,
        )
    resume = resumes(cfg.out, cfg.resume)  # --resume of a directory not there yet just starts it
    run = RunDir.open(dataclasses.replace(cfg, resume=False), "run", ignore=NOT_COMPARED, resume=resume)
    layout = PipelineLayout(run.path)
    run_stage(layout.supernet, [SUPERNET], train_supernet, sn, "supernet")
    run_stage(layout.search, [ARCH], search, se, "search")
    if cfg.compare_random:
        evaluations = read_arch(layout.search / ARCH).get("evaluations")
        rand = dataclasses.replace(se, strategy="random", evaluations=evaluations, out=str(layout.search_random))
        run_stage(layout.search_random, [ARCH], search, rand, "random search")
    budgets = []
    if cfg.budgets:
        budgets = _retrain_budgets(cfg, run, rt)
        largest = Path(max(budgets, key=lambda b: b["value"])["dir"])
        run.on_main(lambda: _link_retrain(run, largest))
        dist.barrier()
        arch_file = largest / ARCH
    else:
        run_stage(layout.retrain, [MODEL, EVAL], retrain, rt, "retrain")
        arch_file = layout.search / ARCH
    summary = run.on_main(lambda: _summarise(run, arch_file, budgets)) or {}
    dist.barrier()
    return summary


def _check_before_training(sn: SupernetConfig, se: SearchConfig, rt: RetrainConfig) -> None:
    """What the space and the dataset's labels alone can refuse, before the run directory is
    written or anything trained: a budget no ensemble meets, a batch larger than a training part."""
    space = SearchSpace.resolve(sn.space)
    check_cascade_paths(se.constraints, space)  # a mean-MACs bound on K = 1, named before the retrain.cascade it sets
    if rt.cascade and space.num_paths < 2:
        raise NeasError(f"retrain.cascade: the space {space.name!r} has K = 1 path; a cascade needs at least 2")
    full = scan_split(sn.data, "train", space.input_size, sn.data_dir, sn.download)
    check_budget(se.constraints, space, full.num_classes, se.split)
    for section, cfg in (("supernet", sn), ("retrain", rt)):
        train = len(holdout_split(full.labels, cfg.holdout)[0]) if cfg.holdout else len(full.labels)
        what = f"images of the training part ({sn.data}, holdout {cfg.holdout or 0:g})"
        check_global_batch(train, cfg.batch_size, dist.get_world_size(), f"{section}.batch_size", what)


def _link_retrain(run: RunDir, largest: Path) -> None:
    """``retrain``, the report's and summary's retrain: a link (ours) to the largest budget's."""
    link = PipelineLayout(run.path).retrain
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(Path(BUDGETS, largest.name, RETRAIN_STAGE), target_is_directory=True)


def _summarise(run: RunDir, arch_file: Path, budgets: list) -> dict:
    """Writes the report and ``summary.json``; returns the summary."""
    from neas.report import build_report

    layout = PipelineLayout(run.path)
    searched = read_arch(layout.search / ARCH)
    report = build_report(run.path)
    summary = Summary.of(
        report, read_arch(arch_file), read_eval(layout.retrain / EVAL), budgets, searched.get("constraints") or {}
    ).to_json()
    run.write_json(SUMMARY, summary)
    return summary


def format_summary(summary: dict) -> str:
    if "budgets" in summary:
        lines = [
            f"within {b['metric']} {b['budget']}: test top-1 {100 * b['test_top1']:.2f}%, NLL {b['test_nll']:.4f}, "
            f"{b['macs'] / 1e6:.3f}M MACs, {b['params'] / 1e6:.3f}M params  ({b['dir']})"
            for b in summary["budgets"]
        ]
        return "one search, every budget:\n" + "\n".join(lines) + f"\nreport: {summary['report']}"
    limits = (
        ", ".join(f"{k} {v / 1e6:g}M" if isinstance(v, int) else f"{k} {v}" for k, v in summary["constraints"].items())
        or "none"
    )
    mean = summary.get("mean_macs")
    macs = f"{summary['macs'] / 1e6:.3f}M MACs" + (
        f" static, {mean / 1e6:.3f}M mean per image as a cascade (test split)" if mean is not None else ""
    )
    return (
        f"final: test top-1 {100 * summary['test_top1']:.2f}% "
        f"(paths: {', '.join(f'{100 * a:.2f}%' for a in summary['path_test_top1'])}), "
        f"{macs}, {summary['params'] / 1e6:.3f}M params; budget: {limits}\n"
        f"report: {summary['report']}"
    )


def main(cfg, args) -> None:
    """`neas run`: prints the summary (with ``--dry-run``, what would run)."""
    if cfg.dry_run:
        from neas.recipes.run_plan import describe_plan

        print(describe_plan(cfg, *checked_stage_configs(cfg)))  # refused as the run would refuse it
        return
    summary = run_pipeline(cfg)
    if dist.is_main_process():
        print(format_summary(summary))
    dist.cleanup()
