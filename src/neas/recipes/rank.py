"""``neas rank``: how well do supernets rank ensembles? (paper Table 2, Kendall τ)

    neas rank --supernet runs/div/supernet runs/none/supernet --num-archs 30 --from-space full \\
        --scratch-epochs 10 --out runs/rank

Samples N ensembles (seeded) from ``--from-space`` (a supernet run's shrunk space, or ``full``),
scores each with inherited weights after BN recalibration in every given supernet, trains each
from scratch with a fixed short recipe on the supernet's training part and scores it on the
held-out part, then reports Kendall τ and Spearman ρ with bootstrap 95 % CIs per supernet
(``rank.json`` and ``rank_<name>.png``). From-scratch runs are cached in ``scratch/`` and
resumable — they are the expensive part and are never redone; they are ``neas retrain`` jobs of
``--executor`` (default ``debug``: in this process, one after another; ``local`` runs
``--max-parallel`` at once). Their scores also go to
``scratch.json`` (each ensemble's arch and top-1, and the recipe), which ``--scratch`` takes
back: ranking new supernets against ensembles already trained from scratch costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import torch

from neas.dist import local_device
from neas.errors import NeasError
from neas.executor import Job, check_executor, job_options, run_jobs, stage_job
from neas.io import read_json, write_json, write_text
from neas.records import read_eval
from neas.report.plots import plot_rank
from neas.report.tables import ci_cell, markdown_table
from neas.rundir import claim_dir, releases_run_dir
from neas.runfiles import EVAL, JOB_LOGS, RANK, RANK_ARCHS, RANK_TABLE, SCRATCH, SCRATCH_RUNS, SUPERNET
from neas.schemas.rank import RankConfig
from neas.schemas.retrain import RetrainConfig
from neas.search.data import heldout_batches
from neas.search.fitness import CandidateEvaluator
from neas.search.ranking import rank_correlation, tau_difference
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace
from neas.supernet.io import SupernetFile, load_supernet, read_supernet_info

__all__ = ["RankConfig", "rank"]

log = logging.getLogger(__name__)


def _key(arch: EnsembleArch) -> str:
    return hashlib.sha1(json.dumps(arch.to_json()).encode()).hexdigest()[:12]


def _setup_supernets(cfg: RankConfig) -> tuple[list[Path], SupernetFile, SearchSpace]:
    """The supernet run directories, the first one's file info and their common space; checked
    before the (long) from-scratch runs, not after."""
    supernets = [Path(p) for p in cfg.supernet]
    missing = [str(p) for p in supernets if not (p / SUPERNET).is_file()]
    if missing:
        raise NeasError(f"not a finished supernet run (no {SUPERNET}): {', '.join(missing)}")
    first, first_info = load_supernet(supernets[0])
    space = first.space
    other = [str(p) for p in supernets[1:] if read_supernet_info(p).space != space]
    if other:
        raise NeasError(
            f"{', '.join(other)}: a space other than {supernets[0]}'s; ranking compares supernets of one space"
        )
    return supernets, first_info, space


def _sample_archs(cfg: RankConfig, space: SearchSpace, shrunk: ShrunkSpace) -> list[EnsembleArch]:
    """``num_archs`` distinct ensembles sampled (seeded) from ``shrunk``."""
    rng = random.Random(f"{cfg.seed}:rank")
    archs = []
    while len(archs) < cfg.num_archs:
        arch = EnsembleArch.sample(space, rng, shrunk)
        if arch not in archs:
            archs.append(arch)
    return archs


def _scratch_recipe(cfg: RankConfig, info: SupernetFile, space: SearchSpace) -> dict:
    """What makes from-scratch scores comparable: the training settings, the data and the space."""
    return {
        "epochs": cfg.scratch_epochs,
        "batch_size": cfg.scratch_batch_size,
        "seed": cfg.seed,
        "data": info.data,
        "holdout": info.holdout,
        "space": json.loads(json.dumps(space.to_dict())),
    }  # as read back from JSON


def _scratch_job(
    cfg: RankConfig, out: Path, arch: EnsembleArch, space: SearchSpace, info: SupernetFile
) -> tuple[Path, Job | None]:
    """The run directory where ``arch`` is trained from scratch (one per arch and recipe: other
    settings, other runs, never a stale result) and its ``neas retrain`` job (None when finished)."""
    key = f"{cfg.scratch_epochs}:{cfg.scratch_batch_size}:{cfg.seed}"
    run = out / SCRATCH_RUNS / f"{_key(arch)}_{hashlib.sha1(key.encode()).hexdigest()[:6]}"
    arch_file = out / SCRATCH_RUNS / f"{run.name}.json"
    if not (run / EVAL).is_file():
        arch_file.parent.mkdir(parents=True, exist_ok=True)
        arch.save(arch_file, space=space.to_dict())
    scratch_cfg = RetrainConfig(
        arch=str(arch_file),
        data=info.data,
        data_dir=info.data_dir,
        out=str(run),
        epochs=cfg.scratch_epochs,
        batch_size=cfg.scratch_batch_size,
        holdout=info.holdout,
        eval_split="holdout",
        eval_every=cfg.scratch_epochs,
        seed=cfg.seed,
        device=cfg.device,
        compile="off",
    )
    return run, stage_job("retrain", scratch_cfg, run, [EVAL], run.with_suffix(".yaml"), f"from scratch {run.name}")


def _train_from_scratch(
    cfg: RankConfig, out: Path, archs: list[EnsembleArch], space: SearchSpace, info: SupernetFile
) -> list[float]:
    """The held-out top-1 of each of ``archs`` trained from scratch: jobs of ``cfg.executor``, each
    skipped when finished before and resumed when interrupted."""
    runs, jobs = zip(*(_scratch_job(cfg, out, arch, space, info) for arch in archs)) if archs else ((), ())
    todo = [job for job in jobs if job is not None]
    if todo:
        run_jobs(todo, log_dir=out / JOB_LOGS, **job_options(cfg))
    return [read_eval(run / EVAL).top1 for run in runs]


def _oneshot_scores(
    cfg: RankConfig, out: Path, path: Path, model, info: SupernetFile, archs: list[EnsembleArch], device
) -> dict:
    """Each ensemble's held-out top-1 with the supernet's inherited weights after BN
    recalibration, and the calibration record; cached per supernet file."""
    weights = (path / SUPERNET).stat()  # a retrained supernet is scored anew
    tag = f"{path.resolve()}:{weights.st_size}:{weights.st_mtime_ns}"
    cache = out / f"oneshot_{path.name}_{hashlib.sha1(tag.encode()).hexdigest()[:6]}.json"
    if cache.is_file():
        return read_json(cache, "cached one-shot scores")
    bn, val, calibration = heldout_batches(info, device, cfg.bn_batches, cfg.batch_size, decoding=cfg.decoding)
    evaluator = CandidateEvaluator(model.to(memory_format=torch.channels_last).eval(), bn, val)
    scored = {"calibration": calibration, "oneshot_acc": [e.ensemble_acc for e in evaluator.evaluate_many(archs)]}
    write_json(cache, scored, indent=None)
    return scored


def _rank_supernet(
    cfg: RankConfig,
    out: Path,
    path: Path,
    reference: Path,
    space: SearchSpace,
    archs: list[EnsembleArch],
    scratch: list[float],
    device,
) -> dict:
    """One supernet's entry: its one-shot scores, their rank correlation with the from-scratch
    ones (overall, and within its shrunk space), and its scatter plot."""
    model, info = load_supernet(path, device)
    if model.space != space:
        raise NeasError(f"{path}: its space differs from {reference}'s; ranking compares supernets of one space")
    scored = _oneshot_scores(cfg, out, path, model, info, archs, device)
    oneshot = scored["oneshot_acc"]
    corr = rank_correlation(oneshot, scratch, cfg.bootstrap, cfg.seed)
    # ensembles the supernet's shrinking removed kept the weights of the round that dropped them
    inside = [i for i, a in enumerate(archs) if a.is_valid(space, info.shrunk)]
    entry = {
        **corr,
        "shrink": info.shrink,
        "oneshot_acc": oneshot,
        "in_shrunk_space": inside,
        "calibration": scored["calibration"],
    }
    if 3 <= len(inside) < len(archs):
        entry["in_shrunk_space_correlation"] = rank_correlation(
            [oneshot[i] for i in inside], [scratch[i] for i in inside], cfg.bootstrap, cfg.seed
        )
    plot_rank(oneshot, scratch, corr, out / f"rank_{path.parent.name}_{path.name}.png", str(path))
    return entry


def _tau_differences(cfg: RankConfig, results: dict, scratch: list[float]) -> dict:
    """The paired-bootstrap difference of Kendall τ between each pair of supernets."""
    names = list(results["supernets"])
    return {
        f"{a} - {b}": tau_difference(
            results["supernets"][a]["oneshot_acc"],
            results["supernets"][b]["oneshot_acc"],
            scratch,
            cfg.bootstrap,
            cfg.seed,
        )
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }


def _write_results(out: Path, results: dict) -> None:
    write_json(out / RANK, results)
    write_text(out / RANK_TABLE, _table(results))


@releases_run_dir
def rank(cfg: RankConfig) -> dict:
    """Ranks the sampled ensembles by each supernet and from scratch; returns (and writes) the correlations."""
    if not cfg.supernet:
        raise NeasError("--supernet needs at least one supernet run directory")
    check_executor(cfg.executor, cfg.slurm)
    device = local_device(cfg.device)
    supernets, first_info, space = _setup_supernets(cfg)
    shrunk = ShrunkSpace.full(space) if cfg.from_space == "full" else load_supernet(cfg.from_space)[1].shrunk
    recipe = _scratch_recipe(cfg, first_info, space)
    known = _read_scratch(cfg.scratch, recipe) if cfg.scratch else {}  # checked before anything is written
    out = claim_dir(cfg.out, "rank")
    archs = _sample_archs(cfg, space, shrunk)
    write_json(out / RANK_ARCHS, [a.to_json() for a in archs])
    # from scratch: reused from --scratch, else cached per arch and resumable
    todo = [a for a in archs if a not in known]
    known |= dict(zip(todo, _train_from_scratch(cfg, out, todo, space, first_info)))
    scratch = [known[a] for a in archs]
    write_json(
        out / SCRATCH,
        {"recipe": recipe, "ensembles": [{"arch": a.to_json(), "top1": t} for a, t in zip(archs, scratch)]},
    )
    results = {
        "archs": len(archs),
        "from_space": cfg.from_space,
        "scratch_epochs": cfg.scratch_epochs,
        "supernets": {},
        "scratch_reused": sum(a in known for a in archs),
    }
    for path in supernets:
        results["supernets"][str(path)] = _rank_supernet(cfg, out, path, supernets[0], space, archs, scratch, device)
    results["scratch_acc"] = scratch
    results["differences"] = _tau_differences(cfg, results, scratch)
    _write_results(out, results)
    return results


def _read_scratch(path: str, recipe: dict) -> dict[EnsembleArch, float]:
    """The from-scratch scores of an earlier rank's ``scratch.json``, refused unless its recipe
    (training settings and search space) is this run's: another recipe's scores would be
    silently wrong."""
    where = f"--scratch {path}"
    if not Path(path).exists():
        raise NeasError(f"{where}: no such file")
    try:
        record = read_json(path, "scratch record")
        given, ensembles = record["recipe"], record["ensembles"]
        if not isinstance(given, dict) or not isinstance(ensembles, list):
            raise TypeError("'recipe' must be an object and 'ensembles' a list")
        scores = {}
        for entry in ensembles:
            top1 = entry["top1"]
            if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not 0 <= top1 <= 1:
                raise ValueError(f"top1 must be an accuracy in [0, 1], got {top1!r}")
            scores[EnsembleArch.from_json(entry["arch"])] = float(top1)
    except FileNotFoundError:
        raise NeasError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError, NeasError) as exc:
        raise NeasError(f"{where}: not a scratch.json written by neas rank ({type(exc).__name__}: {exc})") from None
    differ = [k for k, v in recipe.items() if given.get(k) != v]
    if differ:
        named = ", ".join(
            f"{k}: {given.get(k)!r} there, {recipe[k]!r} here" if k != "space" else "another search space"
            for k in differ
        )
        raise NeasError(f"{where}: made with another from-scratch recipe ({named}); its scores do not apply")
    return scores


def _table(results: dict) -> str:
    """rank.md: each supernet's rank correlations [bootstrap 95 % CI], then the τ difference of each pair."""
    header = ["supernet", "shrinking", "Kendall τ [95 % CI]", "Spearman ρ [95 % CI]", "mean supernet top-1 (%)"]
    header += ["in its shrunk space", "Kendall τ on those [95 % CI]"]
    rows = []
    for path, r in results["supernets"].items():
        sub = r.get("in_shrunk_space_correlation")
        rows.append(
            [
                path,
                r["shrink"],
                ci_cell(r["kendall_tau"], r["kendall_tau_ci95"]),
                ci_cell(r["spearman_rho"], r["spearman_rho_ci95"]),
                f"{100 * sum(r['oneshot_acc']) / len(r['oneshot_acc']):.2f}",
                f"{len(r['in_shrunk_space'])} / {len(r['oneshot_acc'])}",
                ci_cell(sub["kendall_tau"], sub["kendall_tau_ci95"]) if sub else "(all)",
            ]
        )
    title = f"## Ranking: {results['archs']} ensembles, from scratch for {results['scratch_epochs']} epochs"
    lines = [title, "", *markdown_table(header, rows)]
    if results["differences"]:
        pairs = [
            [pair, ci_cell(d["tau_difference"], d["ci95"], signed=True)] for pair, d in results["differences"].items()
        ]
        lines += ["", *markdown_table(["τ difference (paired bootstrap)", "Δτ [95 % CI]"], pairs)]
    return "\n".join(lines) + "\n"


def main(cfg, args) -> None:
    """`neas rank`: prints each supernet's rank correlation."""
    for path, r in rank(cfg)["supernets"].items():
        (lo, hi), n = r["kendall_tau_ci95"], r["n"]
        print(
            f"{path} ({r['shrink']}): Kendall tau {r['kendall_tau']:.3f} [{lo:.3f}, {hi:.3f}], Spearman rho "
            f"{r['spearman_rho']:.3f} over {n} ensembles"
        )
    print(f"rank: {Path(cfg.out, RANK)}")
