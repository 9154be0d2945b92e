"""What the ablations share: the files they write (an input written once, ``ablate.json`` and
``ablate.md``) and their retrainings, ``neas retrain`` jobs of an executor whose costs are read
from their ``eval.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from neas.cost import Cost
from neas.errors import NeasError
from neas.executor import check_executor, run_jobs, stage_job
from neas.executor import job_options as run_options
from neas.io import write_json, write_text
from neas.options import ExecutorOptions
from neas.records import COSTS, EvalRecord
from neas.runfiles import ABLATE, ABLATE_TABLE, EVAL, MODEL
from neas.schemas.retrain import RetrainConfig
from neas.space import EnsembleArch, SearchSpace

__all__ = ["IN_PROCESS", "arch_text", "eval_cost", "finish", "job_options", "mega", "pct", "retrain_all", "write_once"]

log = logging.getLogger(__name__)

IN_PROCESS = {"executor": "debug", "max_parallel": 1}  # the retrainings' default: here, one after another


def write_once(path: Path, text: str) -> None:
    """Writes ``text``; refuses to replace a different existing file (another ablation's input). The
    rule of ``neas compare``'s job configs, which its ``_claim`` spells inline."""
    if path.is_file():
        if path.read_text() != text:
            raise NeasError(
                f"{path} already exists with different content: {path.parent} belongs to another "
                f"ablation; choose another --out"
            )
        return
    write_text(path, text)


def arch_text(arch: EnsembleArch, space: SearchSpace) -> str:
    """An arch file that carries its space (what ``neas retrain --arch`` reads)."""
    return json.dumps({**arch.to_json(), "space": space.to_dict()}, indent=1) + "\n"


def finish(out: Path, kind: str, results: dict, title: str, table: list[str]) -> dict:
    """Writes ``ablate.json`` (``{"ablation": kind, **results}``, returned) and ``ablate.md``: the
    heading ``title`` over the lines of ``table`` (:func:`neas.report.tables.markdown_table`)."""
    record = {"ablation": kind, **results}
    text = "\n".join([f"## {title}", "", *table]) + "\n"
    write_json(out / ABLATE, record)
    write_text(out / ABLATE_TABLE, text)
    log.info("%s:\n%s", kind, text)
    return record


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def mega(count: float) -> str:
    return f"{count / 1e6:.3f}"


def job_options(executor: ExecutorOptions | None) -> dict:
    """:func:`~neas.executor.run_jobs`' options from ``executor`` (None: in this process, one after
    another); what would stop every job is refused here, before the ablation writes anything."""
    if executor is None:
        return IN_PROCESS
    check_executor(executor.executor, executor.slurm)
    return run_options(executor)


def retrain_all(stages: dict[str, RetrainConfig], jobs: dict, log_dir: Path) -> None:
    """Retrains each ``name -> config`` (in its run directory ``config.out``) that is not finished, as
    ``neas retrain`` jobs with the :func:`job_options` ``jobs``; an interrupted one resumes."""
    todo = []
    for name, cfg in stages.items():
        run = Path(cfg.out)
        job = stage_job("retrain", cfg, run, [MODEL, EVAL], run.parent / f"{run.name}.retrain.yaml", name)
        todo += [job] if job is not None else []
    if todo:
        run_jobs(todo, log_dir=log_dir, **jobs)


def eval_cost(run: Path, ev: EvalRecord) -> Cost:
    """The MACs, paper FLOPs and params that the retraining ``run``'s ``eval.json`` (``ev``) reports."""
    missing = [key for key in COSTS if not isinstance(ev.costs[key], int)]
    if missing:
        raise NeasError(f"{run / EVAL}: no {', '.join(missing)} (written by an older neas?); retrain {run}")
    return Cost(*(ev.costs[key] for key in COSTS))
