"""``neas compare``: is an ensemble worth it on this data? The study's rows at one budget, over seeds.

    neas compare --config configs/demo.yaml --seeds 3 --out runs/compare --executor local --max-parallel 2
    neas compare --config configs/cifar10.yaml --seeds 5 --out runs/compare --executor slurm --max-parallel 15 \\
        slurm.partition=gpu slurm.gpus_per_node=1 slurm.cpus_per_task=8 slurm.mem_gb=32 slurm.timeout_min=720

For seed ``s`` (the config's seed + 0, 1, ...), every row is one ordinary run directory under OUT:

- ``neas-seed<s>``: ``neas run`` of the config (K paths from its space); ``none-seed<s>``,
  ``accuracy-seed<s>`` and ``quality-seed<s>``: the same with that shrink mode;
- ``single-seed<s>``: ``neas run`` of the config with a K = 1 copy of its space, at the same budget
  (shrink mode none, like the study's K = 1 rows: diversity needs two paths);
- ``deep-k1-seed<s>``: the same at budget / K, then ``deep-seed<s>``: ``neas ablate deep-ensemble``
  of its searched network with K copies (equal total MACs);
- ``cascade-seed<s>``: ``neas run`` of the config with its MAC budget on the cascade's mean MACs
  (``search.max_mean_macs``), scored as the fitted cascade on the test split
  (:mod:`neas.recipes.compare.rows`).

With ``--retrain-seeds M``, each searched network is trained M times: the run's own retraining,
then ``<row>-seed<s>-retrain<r>`` (``neas retrain`` from seed s + 1000 r; deep ensembles:
``deep-seed<s>-retrain<r>``, copies from s K + 1000 r on), and a row's number for a seed is the mean
over its M trainings, as in the study (the CI is over pipeline seeds: the search is the unit).

With ``budgets:`` in the config, every row's run retrains its pick within each budget (the deep
row's K = 1 run at each budget / K, its deep ensembles per budget: ``deep-seed<s>-<metric>_<b>``),
and both tables are made at each budget; the top-level rows are the largest budget's.

The runs are independent jobs (:func:`neas.executor.run_jobs`, each with ``--threads-per-job``
threads whatever ``--max-parallel``); the deep ensembles and extra retrainings follow once their
run's search is done. Each job's config is written to ``OUT/configs/`` once (headed by its SHA-256:
a damaged one is rewritten from the plan, one of another plan refused); a rerun after a kill skips
finished jobs (every file compare reads from them there and intact) and resumes the others. Then
``compare.json`` / ``compare.md``: per row the per-seed top-1, NLL, ECE, MACs, params and latency,
their mean ± sd and t 95 % CI; per row the differences NEAS minus row, paired by seed, with their
CI and a verdict (:func:`neas.stats.paired_difference`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml

from neas.config import to_dict
from neas.data.datasets import scan_split
from neas.errors import NeasError
from neas.executor import Job, NeasCommand, check_executor, run_jobs
from neas.executor.command import interrupted_by
from neas.executor.configs import job_configs_to_write, write_job_config
from neas.io import write_json, write_text, write_yaml
from neas.options import JOB_KEYS
from neas.recipes.compare.rows import K1_ROWS, at_each_budget, k1_space, row_config, run_config
from neas.recipes.run import RunConfig, budget_folder, budget_value, stage_configs
from neas.report.compare import budget_statistics, format_table, read_source, seed_numbers
from neas.report.html import build_compare_report
from neas.rundir import NOT_COMPARED, check_resume_config, claim_dir, releases_run_dir
from neas.runfiles import (
    ABLATE,
    ARCH,
    COMPARE,
    COMPARE_CONFIGS,
    COMPARE_TABLE,
    CONFIG,
    EVAL,
    JOB_LOGS,
    REPORT,
    REPORT_PAGE,
    SUMMARY,
    PipelineLayout,
)
from neas.schemas.compare import ROWS, CompareConfig
from neas.search.constraints import check_budget
from neas.space import SearchSpace

__all__ = ["CompareConfig", "compare", "format_table"]

log = logging.getLogger(__name__)

RETRAIN_SEED_STEP = 1000  # retraining seed r of pipeline seed s: s + 1000 r (the pipeline's own is r = 0)


@dataclasses.dataclass
class _Plan:
    """Every job of a comparison, in two phases, each config file to write and where each number comes from."""

    out: Path  # the comparison's directory
    first: list  # neas run jobs
    second: list  # jobs that need a first-phase run's searched arch: deep ensembles, extra retraining seeds
    files: dict  # path -> text (the configs, written before the jobs)
    cells: dict  # (row, budget or None, seed) -> [(run directory, its numbers file)], one per retraining seed
    needs: dict = dataclasses.field(default_factory=dict)  # second-phase job name -> the arch file it needs


def _check_budgets(configs: dict, k1: SearchSpace, k1_paths: int) -> None:
    """Refuses, before anything starts, a budget some row's search cannot meet (``k1_paths``: the
    copies a deep ensemble's network shares the budget with)."""
    num_classes = {}
    for (row, _seed), rc in configs.items():
        space = k1 if row in K1_ROWS else SearchSpace.resolve(rc.space)
        if rc.data not in num_classes:
            full = scan_split(rc.data, "train", space.input_size, rc.data_dir, rc.download)
            num_classes[rc.data] = full.num_classes
        for one in at_each_budget(rc):
            try:
                se = stage_configs(one)[1]
                check_budget(se.constraints, space, num_classes[rc.data], se.split)
            except NeasError as exc:
                what = f"{row} (one network at the budget / {k1_paths})" if row == "deep" else row
                raise NeasError(f"--rows {what}: {exc}") from None


def _yaml(value: dict) -> str:
    return yaml.safe_dump(value, sort_keys=False)


def _plan(cfg: CompareConfig, base: RunConfig) -> _Plan:
    """The jobs and configs of every row and seed; refuses a row or budget that cannot run."""
    out = Path(cfg.out)
    k = SearchSpace.resolve(base.space).num_paths
    for row, what in (("deep", "a deep ensemble"), ("cascade", "a cascade")):
        if row in cfg.rows and k < 2:
            raise NeasError(f"--rows {row}: the config's space has K = {k} path; {what} needs K >= 2")
    k1, k1_file = k1_space(base, out)
    configs = {}
    for s in range(cfg.seeds):
        for row in cfg.rows:
            name = f"{'deep-k1' if row == 'deep' else row}-seed{base.seed + s}"
            configs[row, base.seed + s] = row_config(base, row, base.seed + s, out / name, k1_file)
    _check_budgets(configs, k1, k)
    plan = _Plan(out, [], [], {}, {})
    if any(row in K1_ROWS for row in cfg.rows):
        plan.files[k1_file] = k1.to_yaml()
    for (row, seed), rc in configs.items():
        path = out / COMPARE_CONFIGS / f"{Path(rc.out).name}.yaml"
        plan.files[path] = _yaml({k: v for k, v in to_dict(rc).items() if k not in JOB_KEYS})  # in-process
        reads = []  # what compare reads from the run: its numbers (the deep row's: its ensembles')
        for budget, own in zip(base.budgets or [None], rc.budgets or [None]):
            plan.cells[row, budget, seed] = _sources(plan, cfg, rc, row, seed, budget, own, k)
            reads += [numbers for run, numbers in plan.cells[row, budget, seed] if run.is_relative_to(rc.out)]
        argv = ["run", "--config", path, "--out", rc.out]
        plan.first.append(Job(Path(rc.out).name, argv, rc.out, SUMMARY, reads=reads))
    return plan


def _sources(plan: _Plan, cfg: CompareConfig, rc: RunConfig, row: str, seed: int, budget, own, k: int) -> list:
    """Where the numbers of ``row`` at ``budget`` for ``seed`` come from, one per retraining seed, adding the
    jobs that make them; ``own``: the budget of the row's own run (a deep ensemble's K = 1 run: budget / K)."""
    run = Path(rc.out)
    stage = run if own is None else run / budget_folder(rc.budget_metric, own)
    arch = (PipelineLayout(run).search if own is None else stage) / ARCH  # a budget folder holds its own pick
    tag = f"seed{seed}" + ("" if budget is None else f"-{rc.budget_metric}_{budget}")
    retrain = to_dict(stage_configs(rc)[2])
    for key in ("arch", "out", "resume"):
        retrain.pop(key, None)
    numbers = []
    for r in range(cfg.retrain_seeds):
        suffix = f"-retrain{r}" if r else ""
        if row == "deep":  # copies seeded s K .. s K + K - 1 (+ 1000 r): no two of the row's seeds share one
            job = _second(plan, "deep", f"deep-{tag}{suffix}", retrain, seed * k + RETRAIN_SEED_STEP * r, arch, k)
        elif r == 0:
            numbers.append((stage, PipelineLayout(stage).retrain / EVAL))  # the run, or its budget's folder
            continue
        else:
            job = _second(plan, "retrain", f"{row}-{tag}{suffix}", retrain, seed + RETRAIN_SEED_STEP * r, arch)
        numbers.append((job.out, job.out / job.done))
    return numbers


def _second(plan: _Plan, kind: str, name: str, retrain: dict, seed: int, arch: Path, copies: int = 0) -> Job:
    """A job that trains a searched network again (``retrain``) or K copies of it (``deep``), from ``seed``."""
    out = plan.out
    path = out / COMPARE_CONFIGS / f"{name}-retrain.yaml"
    plan.files[path] = _yaml({**retrain, "seed": seed})
    if kind == "deep":
        argv = ["ablate", "deep-ensemble", "--config", path, "--arch", arch, "--copies", copies, "--out", out / name]
        job = Job(name, argv, out / name, ABLATE, resume=False, reads=(out / name / ABLATE,))
    else:
        argv = ["retrain", "--config", path, "--arch", arch, "--out", out / name]
        job = Job(name, argv, out / name, EVAL, reads=(out / name / EVAL,))
    plan.second.append(job)
    plan.needs[name] = arch
    return job


def _claim(cfg: CompareConfig, plan: _Plan) -> Path:
    """Claims OUT as a compare directory (or the one an earlier call of this comparison made) and
    writes the job configs (:func:`~neas.executor.configs.job_configs_to_write`: derived files,
    rewritten when damaged; one that holds another plan is refused)."""
    out = claim_dir(cfg.out, "compare")
    if (out / CONFIG).is_file():
        check_resume_config(out, cfg, NOT_COMPARED)
    todo = job_configs_to_write(plan.files, f"--config {cfg.config}")
    write_yaml(out / CONFIG, to_dict(cfg))
    for path in todo:
        write_job_config(path, plan.files[path])
    return out


def _set_aside_damaged(jobs: list[Job]) -> None:
    """A file compare reads from a job (its ``reads``: numbers, a searched arch) that is there but does
    not read back is renamed ``<name>.damaged`` (kept, never deleted), so the job runs again and rewrites it."""
    for job in jobs:
        for path in job.reads:
            if path.is_file():
                try:
                    read_source(path)
                except NeasError as exc:
                    aside = path.with_name(path.name + ".damaged")
                    path.replace(aside)
                    log.warning("%s: %s; kept as %s, and the job runs again", job.name, exc, aside.name)


def _run(cfg: CompareConfig, plan: _Plan, out: Path) -> None:
    """The runs, then the jobs whose searched arch is there; one error for every failure. A run whose
    searched arch an unfinished job needs is not finished without it."""
    _set_aside_damaged(plan.second)
    needed = {plan.needs[job.name] for job in plan.second if not job.finished}
    first = [
        dataclasses.replace(job, reads=(*job.reads, *(a for a in needed if a.is_relative_to(job.out))))
        for job in plan.first
    ]
    _set_aside_damaged(first)
    command = NeasCommand(threads=cfg.threads_per_job)
    options = {"executor": cfg.executor, "max_parallel": cfg.max_parallel, "slurm": cfg.slurm, "check": False}
    results = run_jobs(first, log_dir=out / JOB_LOGS, command=command, **options)
    ready = [job for job in plan.second if plan.needs[job.name].is_file()]
    results += run_jobs(ready, log_dir=out / JOB_LOGS, command=command, **options) if ready else []
    failed = [r.error for r in results if r.status == "failed"]
    failed += [
        f"{job.name}: the run that searches its network did not finish" for job in plan.second if job not in ready
    ]
    if failed:
        raise NeasError(f"{len(failed)} job(s) failed (rerun to retry only them): " + "; ".join(failed))


def _section(cfg: CompareConfig, plan: _Plan, budget) -> dict:
    """At one budget: every row's per-seed numbers, statistics and differences from NEAS."""
    per_seed = {row: {} for row in cfg.rows}
    for (row, at, seed), numbers in plan.cells.items():
        if at == budget:
            per_seed[row][seed] = seed_numbers(numbers, cascade=row == "cascade")
    return budget_statistics(per_seed, {row: ROWS[row] for row in cfg.rows})


def _collect(cfg: CompareConfig, plan: _Plan, base: RunConfig) -> dict:
    """compare.json's record: the rows and differences at the config's budget (with ``budgets:``, the largest,
    as ``neas run``'s own retrain/), and with ``budgets:`` the same at each budget."""
    record = {"config": str(cfg.config), "seeds": cfg.seeds, "retrain_seeds": cfg.retrain_seeds}
    if not base.budgets:
        return {**record, **_section(cfg, plan, None)}
    sections = {text: _section(cfg, plan, text) for text in base.budgets}
    largest = max(base.budgets, key=lambda text: budget_value(base.budget_metric, text))
    return {**record, **sections[largest], "budget_metric": base.budget_metric, "budgets": sections}


@releases_run_dir
def compare(cfg: CompareConfig) -> dict:
    """Runs every row and seed (skipping finished jobs); writes and returns compare.json's record."""
    check_executor(cfg.executor, cfg.slurm)
    base = run_config(cfg)
    plan = _plan(cfg, base)
    out = _claim(cfg, plan)
    _run(cfg, plan, out)
    record = _collect(cfg, plan, base)
    write_json(out / COMPARE, record)
    write_text(out / COMPARE_TABLE, format_table(record))
    build_compare_report(out)
    return record


def main(cfg: CompareConfig, args) -> None:
    """`neas compare`: prints the table. SIGTERM and SIGHUP stop it like Ctrl-C (and its jobs with it)."""
    with interrupted_by():
        record = compare(cfg)
    print(format_table(record).rstrip())
    print(f"compare: {Path(cfg.out) / COMPARE}; report: {Path(cfg.out) / REPORT / REPORT_PAGE}")
