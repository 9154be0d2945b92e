"""The ablations over whole ``neas run`` pipelines: ``paths`` (Table 5: one config per K) and
``search`` (Figure 5: evolution against random search at equal evaluations)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from neas.config import from_dict, load_yaml
from neas.errors import NeasError
from neas.recipes.ablate.common import finish, mega, pct, write_once
from neas.recipes.run import run_pipeline
from neas.records import read_arch, read_generations, read_summary
from neas.report.tables import markdown_table
from neas.rundir import NOT_COMPARED, claim_dir, config_differences
from neas.runfiles import ARCH, SEARCH_CURVE, SUMMARY, PipelineLayout, generation_file
from neas.schemas.run import RunConfig
from neas.space import EnsembleArch, SearchSpace

__all__ = ["paths_ablation", "search_ablation", "search_curve"]


def _check_reuse(run: Path, base: RunConfig, k: int) -> None:
    """A reused run must be finished and made with the same config apart from the space's K (the one
    same-config rule, :func:`~neas.rundir.config_differences`)."""
    if not (run / SUMMARY).is_file():
        raise NeasError(f"--reuse {k}={run}: not a finished `neas run` directory (no {SUMMARY})")
    differ = [key for key, _, _ in config_differences(run, base, ("space", *NOT_COMPARED))]
    if differ:
        raise NeasError(f"--reuse {k}={run}: its config differs from the given one in {', '.join(differ)}")
    runs_k = read_arch(PipelineLayout(run).search / ARCH).paths
    if len(runs_k) != k:
        raise NeasError(f"--reuse {k}={run}: its ensembles have {len(runs_k)} paths, not {k}")


def _run_k(base: RunConfig, space: SearchSpace, k: int, out: Path) -> Path:
    """The pipeline of ``base`` with K = ``k`` paths in ``out/k<k>`` (resumed when it was started)."""
    space_k = dataclasses.replace(space, num_paths=k, name=f"{space.name}-k{k}")
    space_file = out / f"space_k{k}.yaml"
    write_once(space_file, space_k.to_yaml())
    run = out / f"k{k}"
    run_pipeline(dataclasses.replace(base, space=str(space_file), out=str(run), resume=run.exists()))
    return run


def paths_ablation(config: str, paths: list[int], out: str | Path, reuse: dict[int, str] | None = None) -> dict:
    """Table 5: the whole pipeline of one ``neas run`` config (one budget) for each K in ``paths``, or
    the finished run of the same config that ``reuse`` names for K."""
    base = from_dict(RunConfig, {**load_yaml(config), "resume": False}, str(config))
    space = SearchSpace.resolve(base.space)
    out = claim_dir(out, "ablate paths")
    reuse = reuse or {}
    results = {}
    for k in sorted(set(paths) | set(reuse)):
        if k < 1:
            raise NeasError(f"paths: K must be at least 1 (1: a single network), got {k}")
        if k in reuse:
            run = Path(reuse[k])
            _check_reuse(run, base, k)
        else:
            run = _run_k(base, space, k, out)
        summary = read_summary(run / SUMMARY)
        results[str(k)] = {
            "run": str(run),
            "top1": summary.test_top1,
            "path_top1": summary.path_test_top1,
            "supernet_acc": summary.supernet_acc,
            "split": summary.arch["split"],
            "macs": summary.costs["macs"],
            "params": summary.costs["params"],
            "constraints": summary.constraints,
        }
    title = "Number of paths K (one budget)"
    return finish(out, "paths", {"config": str(config), "runs": results}, title, _paths_table(results))


def _paths_table(results: dict) -> list[str]:
    header = ["K", "split", "ensemble top-1 (%)", "mean path top-1 (%)", "supernet top-1 (%)", "MACs (M)", "params (M)"]
    rows = []
    for k, r in results.items():
        mean_path = sum(r["path_top1"]) / len(r["path_top1"])
        rows.append(
            [k, r["split"], pct(r["top1"]), pct(mean_path), pct(r["supernet_acc"]), mega(r["macs"]), mega(r["params"])]
        )
    return markdown_table(header, rows)


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
    for m in (m for record in records for m in record["members"]):
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
    last = [m["ensemble_acc"] for m in records[-1]["members"]]
    return {
        "evaluations": len(accs),
        "best": best,
        "top_mean": top_mean,
        "top": top,
        "last_generation_mean": sum(last) / len(last),
    }


def _compare_searches(run: Path, top: int) -> dict:
    """Evolution's and random search's curves of the ``neas run`` ``run``, and both at equal evaluations."""
    if not run.is_dir():
        raise NeasError(f"--run {run}: no such directory")
    layout = PipelineLayout(run)
    if not layout.search_random.is_dir():
        raise NeasError(f"{run}: no search_random/ (run it with `compare_random: true`, or pass a run that has one)")
    evo, rnd = search_curve(layout.search, top), search_curve(layout.search_random, top)
    n = min(evo["evaluations"], rnd["evaluations"])
    return {
        "evolution": evo,
        "random": rnd,
        "equal_evaluations": n,
        "evolution_best": evo["best"][n - 1],
        "random_best": rnd["best"][n - 1],
        "evolution_top_mean": evo["top_mean"][n - 1],
        "random_top_mean": rnd["top_mean"][n - 1],
    }


def search_ablation(runs: list[str], out: str | Path, top: int = 10) -> dict:
    """Figure 5: evolution against random search at equal evaluations, for each ``neas run``."""
    from neas.report.plots import plot_search_curves  # matplotlib

    results = {str(run): _compare_searches(run, top) for run in map(Path, runs)}
    out = claim_dir(out, "ablate search")
    plot_search_curves(results, out / SEARCH_CURVE, top)
    header = ["run", "evaluations", "evolution best", "random best", f"evolution top-{top} mean"]
    header += [f"random top-{top} mean", "last generation mean"]
    keys = ("evolution_best", "random_best", "evolution_top_mean", "random_top_mean")
    rows = [
        [run, r["equal_evaluations"], *(pct(r[key]) for key in keys), pct(r["evolution"]["last_generation_mean"])]
        for run, r in results.items()
    ]
    title = "Evolution vs random search (supernet top-1 on search-val, %, at equal evaluations)"
    return finish(out, "search", {"top": top, "runs": results}, title, markdown_table(header, rows))
