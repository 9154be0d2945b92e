"""The recipes: one module per ``neas`` command, and the table of commands the CLI is built from.

Every command is data here — its help, its schema (a config dataclass, or a small command's
callable dataclass), the function that runs it and prints its result, and extra arguments — so
adding a command is one entry; :mod:`neas.cli` turns the table into argparse subcommands and
imports a command's module only when it runs.
"""

from __future__ import annotations

import importlib

__all__ = ["ABLATIONS", "COMMANDS", "EXAMPLES"]


def _artefact(runner: str, constant: str, show: str | None = None):
    """A handler that runs ``neas.recipes.<runner>.<runner>`` and prints (rank 0) the file of
    :mod:`neas.runfiles` named by ``constant``, or what ``show`` ("module:function" of the run
    directory) returns; nothing that imports torch is imported before it runs (``neas --help`` stays fast)."""

    def handle(cfg, args) -> None:
        dist = importlib.import_module("neas.dist")
        name = getattr(importlib.import_module("neas.runfiles"), constant)
        run = getattr(importlib.import_module(f"neas.recipes.{runner}"), runner)(cfg)
        if dist.is_main_process():
            if show is None:
                print(f"{name.split('.')[0]}: {run / name}")
            else:
                module, function = show.split(":")
                print(getattr(importlib.import_module(module), function)(run))
        dist.cleanup()

    return handle


def _printed(runner: str):
    """A handler that prints what ``runner`` ("module:function" of its schema) returns."""

    def handle(cfg, args) -> None:
        module, name = runner.split(":")
        print(getattr(importlib.import_module(module), name)(cfg))

    return handle


_RETRAIN = "neas.schemas.retrain:RetrainConfig"
_COMMANDS = "neas.schemas.commands:"
_TOOLS = "neas.recipes.tools:"
# name: (help, schema "module:Class" (torch-free: neas.schemas) or None, handler(cfg, args), extra arguments)
COMMANDS = {
    "train-supernet": (
        "train the K-path supernet with search-space shrinking",
        "neas.schemas.supernet:SupernetConfig",
        _artefact("train_supernet", "SUPERNET"),
        (),
    ),
    "search": (
        "search the trained supernet for the best ensemble under a budget",
        "neas.schemas.search:SearchConfig",
        _artefact("search", "ARCH"),
        (),
    ),
    "retrain": (
        "retrain an ensemble from scratch with the released models' recipe",
        _RETRAIN,
        _artefact("retrain", "MODEL"),
        (),
    ),
    "evaluate": (
        "top-1, NLL, ECE, Brier of an ensemble, its paths and anytime sub-ensembles; calibration, corruptions, cost, "
        "latency",
        "neas.schemas.evaluate:EvaluateConfig",
        "neas.recipes.evaluate:main",
        (
            ("--json", {"nargs": "?", "const": "-", "help": "print JSON, or write it to this file"}),
            ("--force", {"action": "store_true", "help": "overwrite an existing --json or --save-scores file"}),
        ),
    ),
    "rank": (
        "Kendall tau / Spearman rho of supernet vs from-scratch accuracies (with 95% CIs)",
        "neas.schemas.rank:RankConfig",
        "neas.recipes.rank:main",
        (),
    ),
    "run": (
        "the whole pipeline in one run directory (no arguments: the digits demo)",
        "neas.schemas.run:RunConfig",
        "neas.recipes.run:main",
        (),
    ),
    "compare": (
        "is an ensemble worth it? NEAS vs the best single network vs a deep ensemble at the same budget, over seeds",
        "neas.schemas.compare:CompareConfig",
        "neas.recipes.compare:main",
        (),
    ),
    "detect": (
        "detection transfer: train a RetinaNet with the ensemble as backbone on COCO-format data, score COCO AP",
        "neas.schemas.detect:DetectConfig",
        _artefact("detect", "EVAL", show="neas.detection.predict:print_eval"),
        (),
    ),
    "arch": ("print an ensemble architecture with its cost", _COMMANDS + "ArchCommand", _printed(_TOOLS + "arch"), ()),
    "space": ("print a search space", _COMMANDS + "SpaceCommand", _printed(_TOOLS + "space"), ()),
    "latency-table": (
        "measure the per-(layer, op) latency table of a space on this machine",
        _COMMANDS + "LatencyTableCommand",
        _printed("neas.recipes.latency:latency_table"),
        (),
    ),
    "export": (
        "export an ensemble as one module (safetensors or ONNX), verified",
        _COMMANDS + "ExportCommand",
        _printed(_TOOLS + "export_ensemble"),
        (),
    ),
    "subimagenet": (
        "write the paper's 100-class subImageNet (250 train + 50 val per class)",
        _COMMANDS + "SubImageNetCommand",
        _printed(_TOOLS + "subimagenet"),
        (),
    ),
    "carve-test": (
        "split a train-only image folder into fixed, stratified train/ and test/ parts",
        _COMMANDS + "CarveTestCommand",
        _printed(_TOOLS + "carve_test"),
        (),
    ),
    "synth-detection": (
        "write a small synthetic COCO-format detection set of pasted 8x8 digits",
        _COMMANDS + "SynthDetectionCommand",
        _printed(_TOOLS + "synth_detection"),
        (),
    ),
    "report": (
        "write RUN_DIR/report/index.html with the run's plots",
        _COMMANDS + "ReportCommand",
        _printed(_TOOLS + "report"),
        (),
    ),
}
_ABLATE = "neas.schemas.ablate:"
_ARCH_AND_OUT = ("arch", "out")  # given as flags only: a --config YAML (the retrain recipe) may not move them
# name: (help, schema "module:Class", keys that must be given as flags); each is run by neas.recipes.ablate:main
ABLATIONS = {
    "homo-hetero": (
        "retrain the searched ensemble and its mirrored (homogeneous) variants (Table 3)",
        _ABLATE + "AblateHomoHeteroConfig",
        _ARCH_AND_OUT,
    ),
    "split": (
        "retrain the ensemble with and without shared layers, and the best unshared one under the same budget (Table "
        "4)",
        _ABLATE + "AblateSplitConfig",
        _ARCH_AND_OUT,
    ),
    "paths": (
        "run one `neas run` config for K = 2, 3, 5 ... paths under its budget (Table 5)",
        _ABLATE + "AblatePathsConfig",
        (),
    ),
    "deep-ensemble": (
        "retrain one arch N times from independent initialisations and score their average (a deep ensemble)",
        _ABLATE + "AblateDeepEnsembleConfig",
        _ARCH_AND_OUT,
    ),
    "search": (
        "evolution vs random search at equal evaluations, from runs with compare_random (Figure 5)",
        _ABLATE + "AblateSearchConfig",
        (),
    ),
}

# command ("ablate <name>" for an ablation) -> the example commands its --help shows (None: `neas --help`'s);
# each runs as written from a checkout (configs/), in this order (tests/test_help_examples.py runs every one
# at tiny size)
EXAMPLES = {
    None: [
        "neas run                                   # the digits demo: train, search, retrain, evaluate, report",
        "neas run --config configs/demo.yaml --out runs/mine supernet.epochs=10 retrain.epochs=5",
        "neas compare --config configs/demo.yaml --seeds 3 --out runs/compare --max-parallel 2 supernet.epochs=6",
        "neas evaluate --checkpoint runs/demo       # a `neas run` directory: its retrained ensemble",
        "neas report runs/demo",
    ],
    "run": [
        "neas run                                   # = neas run --config configs/demo.yaml --out runs/demo",
        "neas run --config configs/demo.yaml --out runs/mine supernet.epochs=10 retrain.epochs=5",
        "neas run --config configs/demo.yaml --out runs/plan --dry-run    # what would run; starts nothing",
        "neas run --out runs/demo --resume          # continue an interrupted run (finished stages are skipped)",
    ],
    "compare": [
        "neas compare --config configs/demo.yaml --seeds 3 --out runs/compare --max-parallel 2 supernet.epochs=6",
    ],
    "train-supernet": [
        "neas train-supernet --space tiny --data digits --out runs/sn --epochs 30 --shrink-every 6 --shrink-drop 3",
    ],
    "search": ["neas search --supernet runs/sn --out runs/search --max-macs 0.6M --population 16 --generations 6"],
    "retrain": ["neas retrain --arch runs/search/arch.json --data digits --out runs/retrain --epochs 15"],
    "evaluate": [
        "neas evaluate --checkpoint runs/retrain --json eval.json",
        "neas evaluate --checkpoint runs/retrain --temperature none --corruptions fog --severities 1,5",
    ],
    "export": ["neas export --checkpoint runs/retrain --format onnx --out ensemble.onnx"],
    "report": ["neas report runs/demo"],
    "arch": ["neas arch runs/search/arch.json"],
    "space": ["neas space tiny"],
}
