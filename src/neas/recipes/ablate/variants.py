"""The ablations that retrain variants of one ensemble: ``homo-hetero`` (Table 3), ``split``
(Table 4) and ``deep-ensemble`` (independently trained copies of one arch)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from neas.config import from_dict, load_yaml
from neas.cost import Cost
from neas.data import BatchLoader, holdout_split
from neas.data.datasets import evaluation_view, load_dataset
from neas.dist import local_device
from neas.ensemble.io import load_ensemble
from neas.ensemble.metrics import evaluate_ensemble, measure_latency_ms
from neas.ensemble.model import DeepEnsemble
from neas.errors import NeasError
from neas.options import ExecutorOptions
from neas.pipeline import run_stage
from neas.recipes.ablate.common import arch_text, eval_cost, finish, job_options, mega, pct, retrain_all, write_once
from neas.recipes.search import search
from neas.records import read_arch, read_eval
from neas.report.tables import markdown_table
from neas.rundir import claim_dir
from neas.runfiles import ARCH, CONFIG, EVAL, JOB_LOGS
from neas.schemas.retrain import RetrainConfig
from neas.schemas.search import SearchConfig
from neas.space import EnsembleArch, SearchSpace, resolve_arch_and_space

__all__ = ["deep_ensemble", "homo_hetero", "mirror", "split_ablation", "unshare"]

log = logging.getLogger(__name__)


def mirror(arch: EnsembleArch, k: int) -> EnsembleArch:
    """The homogeneous ensemble whose K paths all copy path ``k`` (split point kept)."""
    if not 0 <= k < arch.num_paths:
        raise NeasError(f"path {k} does not exist (the ensemble has {arch.num_paths} paths)")
    return EnsembleArch(arch.split, (arch.paths[k],) * arch.num_paths, distinct=False)


def unshare(arch: EnsembleArch) -> EnsembleArch:
    """The same ensemble with no shared layers: every path gets its own copy of L1..L{split}."""
    return EnsembleArch(0, arch.paths, distinct=False)


def _retrain_variants(variants: dict, base: RetrainConfig, out: Path, jobs: dict) -> dict:
    """Retrains each ``name -> (arch, space)`` with one recipe in ``out/name``; collects results."""
    stages = {}
    for name, (arch, space) in variants.items():
        arch_file = out / f"{name}.arch.json"
        write_once(arch_file, arch_text(arch, space))
        stages[name] = dataclasses.replace(base, arch=str(arch_file), space=None, out=str(out / name), resume=False)
    retrain_all(stages, jobs, out / JOB_LOGS)
    results = {}
    for name, (arch, _) in variants.items():
        ev = read_eval(out / name / EVAL)
        results[name] = {
            "arch": arch.to_json(),
            "split": arch.split,
            "top1": ev.top1,
            "top5": ev.ensemble["top5"],
            "path_top1": ev.path_top1[: arch.num_paths],
            "diversity": ev.get("diversity"),
            "eval_split": ev.get("split", "test"),
            "images": ev.get("images"),
            **eval_cost(out / name, ev).to_json(),
        }
    return results


def _variant_table(results: dict) -> list[str]:
    k = max(len(r["path_top1"]) for r in results.values())
    header = ["model", "split", *(f"path {j + 1} top-1 (%)" for j in range(k)), "ensemble top-1 (%)"]
    header += ["disagreement (%)", "oracle top-1 (%)", "MACs (M)", "params (M)"]
    rows = []
    for name, r in results.items():
        paths = [pct(a) for a in r["path_top1"]] + [""] * (k - len(r["path_top1"]))
        div = r["diversity"] or {}
        diversity = [pct(div[key]) if key in div else "-" for key in ("disagreement", "oracle_top1")]
        rows.append([name, r["split"], *paths, pct(r["top1"]), *diversity, mega(r["macs"]), mega(r["params"])])
    return markdown_table(header, rows)


def homo_hetero(arch_spec: str, base: RetrainConfig, out: str | Path, executor: ExecutorOptions | None = None) -> dict:
    """Table 3: the searched (heterogeneous) ensemble against its K mirrored (homogeneous) ones,
    retrained with the recipe ``base`` as jobs of ``executor`` (default: in this process)."""
    jobs = job_options(executor)
    arch, space = resolve_arch_and_space(arch_spec, base.space)
    if arch.split == arch.num_layers:
        raise NeasError(
            f"{arch_spec}: its paths share every layer (split {arch.split}); they differ only in their heads, "
            "so mirroring a path changes nothing — pick an ensemble with private layers (e.g. `neas search --split 0 "
            f"{arch.num_layers - 1}`)"
        )
    out = claim_dir(out, "ablate homo-hetero")
    variants = {"hetero": (arch, space)} | {
        f"homo_path{k + 1}": (mirror(arch, k), space) for k in range(arch.num_paths)
    }
    results = _retrain_variants(variants, base, out, jobs)
    title = f"Homogeneous vs heterogeneous paths ({arch_spec})"
    return finish(out, "homo-hetero", {"source": str(arch_spec), "variants": results}, title, _variant_table(results))


def _search_without_sharing(arch_spec: str, space: SearchSpace, out: Path) -> EnsembleArch | None:
    """Reruns the search that produced ``arch_spec`` with the split point fixed at 0, same budget."""
    config = Path(arch_spec).parent / CONFIG
    if not str(arch_spec).endswith(".json") or not config.is_file():
        log.info(
            "split: %s does not come from `neas search` (no %s beside it); no equal-budget search", arch_spec, CONFIG
        )
        return None
    if space.split[0] > 0:
        log.info(
            "split: the supernet's split range starts at %d, so it cannot score unshared ensembles; no equal-budget "
            "search",
            space.split[0],
        )
        return None
    cfg = from_dict(SearchConfig, load_yaml(config), str(config))
    supernet = read_arch(arch_spec).get("supernet") or cfg.supernet
    cfg = dataclasses.replace(cfg, supernet=supernet, out=str(out / "search_no_sharing"), split=[0, 0], resume=False)
    run_stage(out / "search_no_sharing", [ARCH], search, cfg, "search without sharing")
    return EnsembleArch.load(out / "search_no_sharing" / ARCH)


def split_ablation(
    arch_spec: str,
    base: RetrainConfig,
    out: str | Path,
    equal_budget: bool = True,
    executor: ExecutorOptions | None = None,
) -> dict:
    """Table 4: the ensemble as searched, the same ensemble unshared, and (``equal_budget``) the best
    unshared ensemble the same search finds; retrained like :func:`homo_hetero`'s."""
    jobs = job_options(executor)
    arch, space = resolve_arch_and_space(arch_spec, base.space)
    if arch.split == 0:
        raise NeasError(f"{arch_spec}: the ensemble shares no layers (split 0); nothing to compare")
    out = claim_dir(out, "ablate split")
    wide = dataclasses.replace(space, split=(0, space.split[1]))
    variants = {"shared": (arch, space), "no_sharing_same_ops": (unshare(arch), wide)}
    searched = _search_without_sharing(arch_spec, space, out) if equal_budget else None
    if searched is not None:
        variants["no_sharing_searched"] = (searched, wide)
    results = _retrain_variants(variants, base, out, jobs)
    title = f"Layer sharing ({arch_spec})"
    return finish(out, "split", {"source": str(arch_spec), "variants": results}, title, _variant_table(results))


def _train_copies(arch_file: Path, base: RetrainConfig, copies: int, out: Path, jobs: dict) -> tuple:
    """Retrains ``arch_file`` ``copies`` times (seeds ``base.seed + i``) in ``out/copy<i>``; returns
    the trained networks, each copy's own scores and the cost of one copy (its ``eval.json``'s)."""
    stages = {
        f"copy {i} (seed {base.seed + i})": dataclasses.replace(
            base, arch=str(arch_file), space=None, out=str(out / f"copy{i}"), seed=base.seed + i, resume=False
        )
        for i in range(copies)
    }
    retrain_all(stages, jobs, out / JOB_LOGS)
    members, singles, costs = [], [], []
    for stage in stages.values():
        run = Path(stage.out)
        members.append(load_ensemble(run, calibrated=False)[0])
        ev = read_eval(run / EVAL)
        singles.append({"seed": stage.seed, **{k: ev.ensemble[k] for k in ("top1", "nll", "ece", "brier")}})
        costs.append(eval_cost(run, ev))
    return members, singles, costs[0]


def _score_copies(members: list, base: RetrainConfig, space: SearchSpace) -> tuple[dict, float]:
    """The scores of the average of ``members``' logits on the evaluation split, and its latency."""
    device = local_device(base.device)
    net = DeepEnsemble(members).to(device, memory_format=torch.channels_last).eval()
    # the copies' evaluation view, recorded with each (neas.data.preprocess)
    crop = members[0].pretrained_cfg["crop_pct"]
    if base.eval_split == "holdout":
        data = load_dataset(base.data, "train", space.input_size, base.data_dir, **base.decoding)
        data = evaluation_view(data, holdout_split(data.labels, base.holdout)[1], crop)
    else:
        data = load_dataset(base.data, "test", space.input_size, base.data_dir, crop_pct=crop, **base.decoding)
    scores = evaluate_ensemble(net, BatchLoader(data, 256, False, device=device).epoch(0))
    return scores, measure_latency_ms(net, device)


def _deep_table(singles: list[dict], ensemble: dict, cost: Cost, total: Cost) -> list[str]:
    def row(name: str, m: dict, c: Cost) -> list[str]:
        scores = [pct(m["top1"]), f"{m['nll']:.4f}", pct(m["ece"]), f"{m['brier']:.4f}"]
        return [name, *scores, mega(c.macs), mega(c.params)]

    rows = [row(f"copy {i} (seed {m['seed']})", m, cost) for i, m in enumerate(singles)]
    rows.append(row("deep ensemble", ensemble, total))
    return markdown_table(["model", "top-1 (%)", "NLL", "ECE (%)", "Brier", "MACs (M)", "params (M)"], rows)


def deep_ensemble(
    arch_spec: str, base: RetrainConfig, copies: int, out: str | Path, executor: ExecutorOptions | None = None
) -> dict:
    """Retrains ``arch_spec`` ``copies`` times (seeds ``base.seed + i``; jobs of ``executor``) and
    scores the average of the copies' logits on the evaluation split, with the summed costs."""
    jobs = job_options(executor)
    arch, space = resolve_arch_and_space(arch_spec, base.space)
    out = claim_dir(out, "ablate deep-ensemble")
    arch_file = out / ARCH
    write_once(arch_file, arch_text(arch, space))
    members, singles, cost = _train_copies(arch_file, base, copies, out, jobs)
    scores, latency = _score_copies(members, base, space)
    result = {
        "source": str(arch_spec),
        "copies": copies,
        "arch": arch.to_json(),
        "members": singles,
        "ensemble": scores["ensemble"],
        "diversity": scores["diversity"],
        "images": scores["images"],
        "eval_split": base.eval_split,
        **(cost * copies).to_json(),
        "latency_ms": latency,
    }
    title = f"Deep ensemble: {copies} independently trained copies of {arch_spec}"
    table = _deep_table(singles, result["ensemble"], cost, cost * copies)
    return finish(out, "deep-ensemble", result, title, table)
