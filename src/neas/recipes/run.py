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
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from neas import dist
from neas.config import flat_fields, from_dict, option
from neas.errors import NeasError
from neas.options import DataOptions, DeviceOptions
from neas.recipes.retrain import RetrainConfig, retrain
from neas.recipes.search import SearchConfig, search
from neas.recipes.train_supernet import SupernetConfig, train_supernet
from neas.train.checkpoint import atomic_write_text
from neas.train.loop import prepare_run_dir, run_stage

__all__ = ["RunConfig", "run_pipeline", "DEMO"]

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # shipped configs (also ./configs in the repo)
DEMO = CONFIGS / "demo.yaml"  # what `neas run` runs with no arguments

_SHARED = ("space", "data", "data_dir", "download", "seed", "device")
# not compared on --resume at the top: each stage checks its own section (a stage that has not started
# may be corrected; a finished one is never reused under other settings), and random search may be added
NOT_COMPARED = ("resume", "out", "device", "workers", "compare_random", "supernet", "search", "retrain")


@dataclass
class RunConfig(DataOptions, DeviceOptions):
    """``neas run``'s YAML: shared keys, then one section per stage (the stages' own keys)."""

    out: str = option("runs/demo", "run directory")
    space: str = option("tiny", "search space preset or YAML file")
    compare_random: bool = option(False, "also run random search with as many evaluations")
    supernet: dict = option(default_factory=dict, help="keys of `neas train-supernet`", cli=False)
    search: dict = option(default_factory=dict, help="keys of `neas search`", cli=False)
    retrain: dict = option(default_factory=dict, help="keys of `neas retrain`", cli=False)
    resume: bool = option(False, "continue an interrupted run")

    def stages(self) -> tuple[SupernetConfig, SearchConfig, RetrainConfig]:
        """The three stages' configs: each section's keys, plus the shared keys its schema has and
        the paths `neas run` sets itself (which a section may not set)."""
        run = Path(self.out)
        own = {
            "supernet": (SupernetConfig, {"out": str(run / "supernet")}),
            "search": (SearchConfig, {"supernet": str(run / "supernet"), "out": str(run / "search")}),
            "retrain": (RetrainConfig, {"arch": str(run / "search" / "arch.json"), "out": str(run / "retrain")}),
        }
        configs = []
        for section, (cls, paths) in own.items():
            keys = {ff.key for ff in flat_fields(cls)}
            fixed = {**{k: getattr(self, k) for k in _SHARED if k in keys}, **paths}
            for key in getattr(self, section):
                if key in fixed or key == "resume":
                    raise NeasError(f"{section}.{key}: set by `neas run` itself{' (use the top-level key)' if key in _SHARED else ''}")
            configs.append(from_dict(cls, {**getattr(self, section), **fixed}, section))
        return tuple(configs)


def run_pipeline(cfg: RunConfig) -> dict:
    """Runs every stage; returns the final summary (also written to ``summary.json``)."""
    run = Path(cfg.out)
    sn, se, rt = cfg.stages()
    if dist.is_main_process():  # --resume of a directory that is not there yet just starts it
        resume = cfg.resume and run.is_dir() and any(run.iterdir())
        prepare_run_dir(run, resume, dataclasses.replace(cfg, resume=False), "run", legacy=("config.yaml", "supernet/config.yaml"),
                        ignore=NOT_COMPARED)
    dist.barrier()
    run_stage(run / "supernet", ["supernet.safetensors"], train_supernet, sn, "supernet")
    run_stage(run / "search", ["arch.json"], search, se, "search")
    if cfg.compare_random:
        evaluations = json.loads((run / "search" / "arch.json").read_text())["evaluations"]
        rand = dataclasses.replace(se, strategy="random", evaluations=evaluations, out=str(run / "search_random"))
        run_stage(run / "search_random", ["arch.json"], search, rand, "random search")
    run_stage(run / "retrain", ["model.safetensors", "eval.json"], retrain, rt, "retrain")
    summary = {}
    if dist.is_main_process():
        from neas.report import build_report

        arch = json.loads((run / "search" / "arch.json").read_text())
        result = json.loads((run / "retrain" / "eval.json").read_text())
        report = build_report(run)
        summary = {
            "report": str(report),
            "test_top1": result["ensemble"]["top1"],
            "test_nll": result["ensemble"]["nll"],
            "test_ece": result["ensemble"]["ece"],
            "path_test_top1": [result[f"path{j}"]["top1"] for j in range(len(arch["paths"]))],
            "supernet_acc": arch["supernet_acc"],
            "macs": arch["macs"],
            "paper_flops": arch["paper_flops"],
            "params": arch["params"],
            "constraints": arch["constraints"],
            "arch": {"split": arch["split"], "paths": arch["paths"]},
        }
        atomic_write_text(run / "summary.json", json.dumps(summary, indent=1) + "\n")
    dist.barrier()
    return summary


def format_summary(summary: dict) -> str:
    limits = ", ".join(f"{k} {v / 1e6:g}M" if isinstance(v, int) else f"{k} {v}" for k, v in summary["constraints"].items()) or "none"
    return (
        f"final: test top-1 {100 * summary['test_top1']:.2f}% "
        f"(paths: {', '.join(f'{100 * a:.2f}%' for a in summary['path_test_top1'])}), "
        f"{summary['macs'] / 1e6:.3f}M MACs, {summary['params'] / 1e6:.3f}M params; budget: {limits}\n"
        f"report: {summary['report']}"
    )
