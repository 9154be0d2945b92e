"""``neas ablate``: the paper's ablations as resumable drivers (docs/RESULTS.md).

    neas ablate homo-hetero --arch runs/x/search/arch.json --data cifar10 --data-dir D --out runs/homo_hetero
    neas ablate split       --arch runs/x/search/arch.json --data cifar10 --data-dir D --out runs/split
    neas ablate paths       --config cfg.yaml --paths 2 3 5 --out runs/paths
    neas ablate search      --run runs/a runs/b --out runs/search_curve
    neas ablate deep-ensemble --arch runs/k1/search/arch.json --copies 2 --data cifar10 --data-dir D --out runs/deep

``homo-hetero`` (Table 3) retrains the searched ensemble and, for each path k, the homogeneous
ensemble whose K paths all copy path k. ``split`` (Table 4) retrains the ensemble as searched,
the same ensemble with no shared layers (the shared layers copied into every path, which costs
more), and — when the arch file comes from ``neas search`` — the best ensemble that the same
search finds with no shared layers under the same budget. ``paths`` (Table 5) runs the whole
pipeline of a ``neas run`` config once per K under the config's budget. ``search`` (Figure 5)
draws evolution against random search at equal evaluations from runs made with
``compare_random: true``. ``deep-ensemble`` retrains one architecture (typically a searched
K = 1 network) ``--copies`` times from independent initialisations (seeds seed, seed+1, ...) and
scores the average of their logits: the plain deep ensemble a searched ensemble must beat at
equal cost. Every retrain/run lives in a sub-directory of ``--out`` and resumes
after an interruption; finished ones are skipped. The retrainings of ``homo-hetero``, ``split`` and
``deep-ensemble`` are ``neas retrain`` jobs of ``--executor`` (:func:`neas.executor.run_jobs`;
default ``debug``: in this process, one after another), ``--max-parallel`` of them at once. Each
driver writes ``ablate.json`` and a Markdown table ``ablate.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
import yaml

from neas.config import from_dict, load_yaml
from neas.cost import cost_table
from neas.data import BatchLoader, holdout_split
from neas.data.datasets import evaluation_view, load_dataset
from neas.dist import local_device
from neas.ensemble.io import load_ensemble
from neas.ensemble.metrics import evaluate_ensemble, measure_latency_ms
from neas.ensemble.model import DeepEnsemble
from neas.errors import NeasError
from neas.executor import check_executor, run_jobs, stage_job
from neas.io import read_json, save_figure, write_json, write_text
from neas.pipeline import run_stage
from neas.recipes.retrain import RetrainConfig
from neas.recipes.run import RunConfig, run_pipeline
from neas.recipes.search import SearchConfig, search
from neas.records import read_arch, read_eval, read_generations
from neas.rundir import (
    NOT_COMPARED,
    claim_dir,
    config_differences,
    release_run_dir,
)
from neas.runfiles import (
    ABLATE,
    ABLATE_TABLE,
    ARCH,
    CONFIG,
    EVAL,
    JOB_LOGS,
    MODEL,
    SEARCH_CURVE,
    SUMMARY,
    PipelineLayout,
    generation_file,
)
from neas.space import EnsembleArch, SearchSpace, resolve_arch_and_space

__all__ = [
    "deep_ensemble",
    "homo_hetero",
    "mirror",
    "paths_ablation",
    "search_ablation",
    "search_curve",
    "split_ablation",
    "unshare",
]

log = logging.getLogger(__name__)

IN_PROCESS = {"executor": "debug", "max_parallel": 1}  # the retrainings' default: here, one after another


def mirror(arch: EnsembleArch, k: int) -> EnsembleArch:
    """The homogeneous ensemble whose K paths all copy path ``k`` (split point kept)."""
    if not 0 <= k < arch.num_paths:
        raise NeasError(f"path {k} does not exist (the ensemble has {arch.num_paths} paths)")
    return EnsembleArch(arch.split, (arch.paths[k],) * arch.num_paths, distinct=False)


def unshare(arch: EnsembleArch) -> EnsembleArch:
    """The same ensemble with no shared layers: every path gets its own copy of L1..L{split}."""
    return EnsembleArch(0, arch.paths, distinct=False)


def _write_once(path: Path, text: str) -> None:
    """Writes ``text``; refuses to replace a different existing file (another ablation's input)."""
    if path.is_file():
        if path.read_text() != text:
            raise NeasError(
                f"{path} already exists with different content: {path.parent} belongs to another "
                f"ablation; choose another --out"
            )
        return
    write_text(path, text)


def _finish(out: Path, kind: str, results: dict, table: str) -> dict:
    record = {"ablation": kind, **results}
    write_json(out / ABLATE, record)
    write_text(out / ABLATE_TABLE, table)
    log.info("%s:\n%s", kind, table)
    return record


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _retrain_all(stages: dict[str, RetrainConfig], jobs: dict | None, log_dir: Path) -> None:
    """Retrains each ``name -> config`` (in its run directory ``config.out``) that is not finished:
    ``neas retrain`` jobs of the executor ``jobs`` names (``executor``, ``max_parallel``; default: in
    this process, one after another), each skipped when finished and resumed when interrupted."""
    todo = []
    for name, cfg in stages.items():
        run = Path(cfg.out)
        job = stage_job("retrain", cfg, run, [MODEL, EVAL], run.parent / f"{run.name}.retrain.yaml", name)
        todo += [job] if job is not None else []
    if todo:
        run_jobs(todo, log_dir=log_dir, **{**IN_PROCESS, **(jobs or {})})


def _slurm_options(items: list[str]) -> dict:
    """``--slurm partition=gpu timeout_min=720`` -> ``{"partition": "gpu", "timeout_min": 720}`` (YAML values)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NeasError(f"--slurm {item!r}: expected KEY=VALUE, e.g. partition=gpu")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise NeasError(f"--slurm {item!r}: {value!r} is not a YAML value") from None
    return options


def _check_jobs(jobs: dict) -> None:
    """Refuses, before anything is written, executor options no retraining could run with."""
    check_executor(jobs["executor"], jobs.get("slurm"))
    parallel = jobs["max_parallel"]
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise NeasError(f"--max-parallel must be an integer >= 1, got {parallel!r}")


def _retrain_variants(variants: dict, base: RetrainConfig, out: Path, jobs: dict | None = None) -> dict:
    """Retrains each ``name -> (arch, space)`` with one recipe in ``out/name`` (jobs of the executor
    ``jobs`` names); collects results."""
    stages = {}
    for name, (arch, space) in variants.items():
        arch_file = out / f"{name}.arch.json"
        _write_once(arch_file, json.dumps({**arch.to_json(), "space": space.to_dict()}, indent=1) + "\n")
        stages[name] = dataclasses.replace(base, arch=str(arch_file), space=None, out=str(out / name), resume=False)
    _retrain_all(stages, jobs, out / JOB_LOGS)
    results = {}
    for name, (arch, space) in variants.items():
        ev = read_eval(out / name / EVAL).raw
        k = arch.num_paths
        cost = cost_table(space, _num_classes(out / name)).cost(arch)
        results[name] = {
            "arch": arch.to_json(),
            "split": arch.split,
            "top1": ev["ensemble"]["top1"],
            "top5": ev["ensemble"]["top5"],
            "path_top1": [ev[f"path{j}"]["top1"] for j in range(k)],
            "diversity": ev.get("diversity"),
            "eval_split": ev.get("split", "test"),
            "images": ev["images"],
            "macs": cost.macs,
            "paper_flops": cost.paper_flops,
            "params": cost.params,
        }
    return results


def _num_classes(run: Path) -> int:
    return load_ensemble(run / MODEL)[1].num_classes


def _variant_table(results: dict, title: str) -> str:
    k = max(len(r["path_top1"]) for r in results.values())
    lines = [
        f"## {title}",
        "",
        "| model | split | "
        + " | ".join(f"path {j + 1} top-1 (%)" for j in range(k))
        + " | ensemble top-1 (%) | disagreement (%) | oracle top-1 (%) | MACs (M) | params (M) |",
        "|---|---|" + "---|" * k + "---|---|---|---|---|",
    ]
    for name, r in results.items():
        paths = [_pct(a) for a in r["path_top1"]] + [""] * (k - len(r["path_top1"]))
        div = r["diversity"] or {}
        diversity = " | ".join(_pct(div[key]) if key in div else "-" for key in ("disagreement", "oracle_top1"))
        lines.append(
            f"| {name} | {r['split']} | "
            + " | ".join(paths)
            + f" | {_pct(r['top1'])} | {diversity} | {r['macs'] / 1e6:.3f} | {r['params'] / 1e6:.3f} |"
        )
    return "\n".join(lines) + "\n"


def homo_hetero(arch_spec: str, base: RetrainConfig, out: str | Path, jobs: dict | None = None) -> dict:
    """Table 3: the searched (heterogeneous) ensemble against its K mirrored (homogeneous) ones."""
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
    return _finish(
        out,
        "homo-hetero",
        {"source": str(arch_spec), "variants": results},
        _variant_table(results, f"Homogeneous vs heterogeneous paths ({arch_spec})"),
    )


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
    cfg = from_dict(SearchConfig, yaml.safe_load(config.read_text()), str(config))
    supernet = read_json(arch_spec, "arch file").get("supernet") or cfg.supernet
    cfg = dataclasses.replace(cfg, supernet=supernet, out=str(out / "search_no_sharing"), split=[0, 0], resume=False)
    run_stage(out / "search_no_sharing", [ARCH], search, cfg, "search without sharing")
    return EnsembleArch.load(out / "search_no_sharing" / ARCH)


def split_ablation(
    arch_spec: str, base: RetrainConfig, out: str | Path, equal_budget: bool = True, jobs: dict | None = None
) -> dict:
    """Table 4: the ensemble as searched, the same ensemble unshared, and (equal budget) the best
    unshared ensemble the same search finds."""
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
    return _finish(
        out,
        "split",
        {"source": str(arch_spec), "variants": results},
        _variant_table(results, f"Layer sharing ({arch_spec})"),
    )


def paths_ablation(config: str, paths: list[int], out: str | Path, reuse: dict[int, str] | None = None) -> dict:
    """Table 5: the whole pipeline of one ``neas run`` config (one budget) for each K in ``paths``."""
    base = from_dict(RunConfig, {**load_yaml(config), "resume": False}, str(config))
    space = SearchSpace.resolve(base.space)
    out = claim_dir(out, "ablate paths")
    reuse = reuse or {}
    results = {}
    for k in sorted(set(paths) | set(reuse)):
        if k < 1:
            raise NeasError(f"--paths: K must be at least 1 (1: a single network), got {k}")
        if k in reuse:
            run = Path(reuse[k])
            _check_reuse(run, base, k)
        else:
            space_k = dataclasses.replace(space, num_paths=k, name=f"{space.name}-k{k}")
            space_file = out / f"space_k{k}.yaml"
            _write_once(space_file, space_k.to_yaml())
            run = out / f"k{k}"
            run_pipeline(dataclasses.replace(base, space=str(space_file), out=str(run), resume=run.exists()))
        summary = read_json(run / SUMMARY, "pipeline summary")
        results[str(k)] = {
            "run": str(run),
            "top1": summary["test_top1"],
            "path_top1": summary["path_test_top1"],
            "supernet_acc": summary["supernet_acc"],
            "split": summary["arch"]["split"],
            "macs": summary["macs"],
            "params": summary["params"],
            "constraints": summary["constraints"],
        }
    lines = [
        "## Number of paths K (one budget)",
        "",
        "| K | split | ensemble top-1 (%) | mean path top-1 (%) | supernet top-1 (%) | MACs (M) | params (M) |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, r in results.items():
        lines.append(
            f"| {k} | {r['split']} | {_pct(r['top1'])} | {_pct(sum(r['path_top1']) / len(r['path_top1']))} | "
            f"{_pct(r['supernet_acc'])} | {r['macs'] / 1e6:.3f} | {r['params'] / 1e6:.3f} |"
        )
    return _finish(out, "paths", {"config": str(config), "runs": results}, "\n".join(lines) + "\n")


def _check_reuse(run: Path, base: RunConfig, k: int) -> None:
    """A reused run must be finished and made with the same config apart from the space's K."""
    if not (run / SUMMARY).is_file():
        raise NeasError(f"--reuse {k}={run}: not a finished `neas run` directory (no {SUMMARY})")
    differ = [key for key, _, _ in config_differences(run, base, ("space", *NOT_COMPARED))]
    if differ:
        raise NeasError(f"--reuse {k}={run}: its config differs from the given one in {', '.join(differ)}")
    runs_k = list(read_arch(PipelineLayout(run).search / ARCH).paths)
    if len(runs_k) != k:
        raise NeasError(f"--reuse {k}={run}: its ensembles have {len(runs_k)} paths, not {k}")


def search_curve(search_dir: str | Path, top: int = 10) -> dict:
    """Evaluation-ordered accuracies of a search run: the best and the mean of the ``top`` best
    ensembles found after each new evaluation (repeats of a memoised candidate do not count)."""
    search_dir = Path(search_dir)
    records = read_generations(search_dir)
    if not records:
        raise NeasError(
            f"{search_dir}: no {generation_file(0)} (not a `neas search` directory, or it never finished a generation)"
        )
    seen, accs = set(), []
    generations = []
    for record in records:
        generations.append([m["ensemble_acc"] for m in record["members"]])
        for m in record["members"]:
            key = EnsembleArch.from_json(m)
            if key not in seen:
                seen.add(key)
                accs.append(m["ensemble_acc"])
    best, top_mean, found = [], [], []
    for acc in accs:
        found.append(acc)
        found.sort(reverse=True)
        del found[top:]
        best.append(found[0])
        top_mean.append(sum(found) / len(found))
    last = generations[-1]
    return {
        "evaluations": len(accs),
        "best": best,
        "top_mean": top_mean,
        "top": top,
        "last_generation_mean": sum(last) / len(last),
    }


def search_ablation(runs: list[str], out: str | Path, top: int = 10) -> dict:
    """Figure 5: evolution against random search at equal evaluations, for each ``neas run``."""
    results = {}
    for run in map(Path, runs):
        if not run.is_dir():
            raise NeasError(f"--run {run}: no such directory")
        layout = PipelineLayout(run)
        if not layout.search_random.is_dir():
            raise NeasError(
                f"{run}: no search_random/ (run it with `compare_random: true`, or pass a run that has one)"
            )
        evo, rnd = search_curve(layout.search, top), search_curve(layout.search_random, top)
        n = min(evo["evaluations"], rnd["evaluations"])
        results[str(run)] = {
            "evolution": evo,
            "random": rnd,
            "equal_evaluations": n,
            "evolution_best": evo["best"][n - 1],
            "random_best": rnd["best"][n - 1],
            "evolution_top_mean": evo["top_mean"][n - 1],
            "random_top_mean": rnd["top_mean"][n - 1],
        }
    out = claim_dir(out, "ablate search")
    _plot_curves(results, out / SEARCH_CURVE, top)
    lines = [
        "## Evolution vs random search (supernet top-1 on search-val, %, at equal evaluations)",
        "",
        f"| run | evaluations | evolution best | random best | evolution top-{top} mean | random top-{top} mean | "
        "last generation mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, r in results.items():
        lines.append(
            f"| {run} | {r['equal_evaluations']} | {_pct(r['evolution_best'])} | {_pct(r['random_best'])} | "
            f"{_pct(r['evolution_top_mean'])} | {_pct(r['random_top_mean'])} | "
            f"{_pct(r['evolution']['last_generation_mean'])} |"
        )
    return _finish(out, "search", {"top": top, "runs": results}, "\n".join(lines) + "\n")


def _plot_curves(results: dict, path: Path, top: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (run, r) in zip(axes[0], results.items()):
        for name, style in (("evolution", "-"), ("random", "--")):
            curve = r[name]
            x = range(1, curve["evaluations"] + 1)
            ax.plot(
                x,
                [100 * a for a in curve["top_mean"]],
                style,
                color="C0" if name == "evolution" else "C1",
                label=f"{name}: top-{top} mean",
            )
            ax.plot(
                x,
                [100 * a for a in curve["best"]],
                style,
                color="C0" if name == "evolution" else "C1",
                alpha=0.4,
                label=f"{name}: best",
            )
        ax.set(xlabel="ensembles evaluated", ylabel="supernet top-1 on search-val (%)", title=Path(run).name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _train_copies(arch_file: Path, base: RetrainConfig, copies: int, out: Path, jobs: dict | None) -> tuple:
    """Retrains ``arch_file`` ``copies`` times (seeds ``base.seed + i``) in ``out/copy<i>``; returns
    the trained networks and each copy's own scores."""
    stages = {
        f"copy {i} (seed {base.seed + i})": dataclasses.replace(
            base, arch=str(arch_file), space=None, out=str(out / f"copy{i}"), seed=base.seed + i, resume=False
        )
        for i in range(copies)
    }
    _retrain_all(stages, jobs, out / JOB_LOGS)
    members, singles = [], []
    for stage in stages.values():
        members.append(load_ensemble(Path(stage.out))[0])
        ev = read_eval(Path(stage.out) / EVAL).raw
        singles.append({"seed": stage.seed, **{k: ev["ensemble"][k] for k in ("top1", "nll", "ece", "brier")}})
    return members, singles


def deep_ensemble(arch_spec: str, base: RetrainConfig, copies: int, out: str | Path, jobs: dict | None = None) -> dict:
    """Retrains ``arch_spec`` ``copies`` times (seeds ``base.seed + i``; jobs of the executor ``jobs``
    names) and scores the average of the copies' logits on the evaluation split, with the summed costs."""

    if copies < 2:
        raise NeasError(f"--copies: a deep ensemble needs at least 2 copies, got {copies}")
    arch, space = resolve_arch_and_space(arch_spec, base.space)
    out = claim_dir(out, "ablate deep-ensemble")
    arch_file = out / ARCH
    _write_once(arch_file, json.dumps({**arch.to_json(), "space": space.to_dict()}, indent=1) + "\n")
    members, singles = _train_copies(arch_file, base, copies, out, jobs)
    device = local_device(base.device)
    net = DeepEnsemble(members).to(device, memory_format=torch.channels_last).eval()
    split = "test" if base.eval_split == "test" else "train"
    data = load_dataset(base.data, split, space.input_size, base.data_dir, **base.decoding)
    if base.eval_split == "holdout":
        data = evaluation_view(data, holdout_split(data.labels, base.holdout)[1])
    scores = evaluate_ensemble(net, BatchLoader(data, 256, False, device=device).epoch(0))
    cost = cost_table(space, members[0].num_classes).cost(arch)
    result = {
        "source": str(arch_spec),
        "copies": copies,
        "arch": arch.to_json(),
        "members": singles,
        "ensemble": scores["ensemble"],
        "diversity": scores["diversity"],
        "images": scores["images"],
        "eval_split": base.eval_split,
        "macs": copies * cost.macs,
        "paper_flops": copies * cost.paper_flops,
        "params": copies * cost.params,
        "latency_ms": measure_latency_ms(net, device),
    }
    e = result["ensemble"]
    table = "\n".join(
        [
            f"## Deep ensemble: {copies} independently trained copies of {arch_spec}",
            "",
            "| model | top-1 (%) | NLL | ECE (%) | Brier | MACs (M) | params (M) |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| copy {i} (seed {m['seed']}) | {_pct(m['top1'])} | {m['nll']:.4f} | {_pct(m['ece'])} | "
                f"{m['brier']:.4f} | "
                f"{cost.macs / 1e6:.3f} | {cost.params / 1e6:.3f} |"
                for i, m in enumerate(singles)
            ),
            f"| deep ensemble | {_pct(e['top1'])} | {e['nll']:.4f} | {_pct(e['ece'])} | {e['brier']:.4f} | "
            f"{result['macs'] / 1e6:.3f} | "
            f"{result['params'] / 1e6:.3f} |",
            "",
        ]
    )
    return _finish(out, "deep-ensemble", result, table)


def main(cfg, args) -> None:
    """`neas ablate ...`: runs the ablation, prints its table."""
    try:
        record = _run_ablation(cfg, args)
    finally:
        release_run_dir(Path(args.out))
    print(Path(args.out, ABLATE_TABLE).read_text().rstrip())
    print(f"ablate: {Path(args.out, ABLATE)} ({record['ablation']})")


def _run_ablation(cfg, args) -> dict:
    jobs = {
        "executor": getattr(args, "executor", "debug"),
        "max_parallel": getattr(args, "max_parallel", 1),
        "slurm": _slurm_options(getattr(args, "slurm", [])),
    }
    _check_jobs(jobs)
    if args.ablation == "paths":
        reuse = {}
        for item in args.reuse or []:
            k, sep, run = item.partition("=")
            if not sep or not k.isdigit():
                raise NeasError(f"--reuse {item!r}: expected K=RUN_DIR, e.g. 2=runs/cifar10")
            reuse[int(k)] = run
        record = paths_ablation(args.config, args.paths, args.out, reuse)
    elif args.ablation == "search":
        record = search_ablation(args.run, args.out, args.top)
    elif args.ablation == "deep-ensemble":
        record = deep_ensemble(args.arch, cfg, args.copies, args.out, jobs)
    elif args.ablation == "homo-hetero":
        record = homo_hetero(args.arch, cfg, args.out, jobs)
    else:
        record = split_ablation(args.arch, cfg, args.out, equal_budget=args.equal_budget, jobs=jobs)
    return record
