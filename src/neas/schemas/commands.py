"""The schemas of the small commands: ``arch``, ``space``, ``export``, ``report``, ``latency-table``,
``subimagenet``, ``carve-test``, ``synth-detection`` (run by :mod:`neas.recipes.tools` and
:mod:`neas.recipes.latency`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neas.config import option
from neas.cost.settings import RUNTIMES
from neas.errors import NeasError
from neas.io import check_output, check_output_dir
from neas.options import DEVICE_HELP, MAX_CLASSES
from neas.outputs import check_new_folder, run_kind
from neas.runfiles import MODEL, SUPERNET, SYNTH_UNFINISHED
from neas.settings import validate_fields

__all__ = [
    "ArchCommand",
    "CarveTestCommand",
    "ExportCommand",
    "LatencyTableCommand",
    "ReportCommand",
    "SpaceCommand",
    "SubImageNetCommand",
    "SynthDetectionCommand",
]


@dataclass
class ArchCommand:
    """print an ensemble architecture with its cost"""

    arch: str = option(None, "neas-s, neas-m, neas-l or an arch JSON file", positional=True)
    space: str | None = option(None, "search space preset or YAML file", default_help="the file's, else imagenet")
    input_size: int | None = option(None, "input resolution", default_help="the space's", valid=">= 8")
    num_classes: int | None = option(
        None, "classifier outputs", default_help="the arch file's num_classes, else 1000", valid=f"1..{MAX_CLASSES}"
    )
    json: bool = option(False, "print one JSON object")


@dataclass
class SpaceCommand:
    """print a search space"""

    space: str = option(None, "preset (imagenet, cifar, tiny) or YAML file", positional=True)
    yaml: bool = option(False, "print the resolved space as YAML")
    num_classes: int = option(
        1000, "classifier outputs, for the MACs range of the space's ensembles", valid=f"1..{MAX_CLASSES}"
    )


@dataclass
class ExportCommand:
    """export an ensemble as one module (safetensors, ONNX, or a Hub-ready timm folder with a model card), verified"""

    checkpoint: str | None = option(None, "a neas weights file or retrain run directory")
    official_checkpoint: str | None = option(None, "a released NEAS .pth.tar file")
    arch: str | None = option(None, "with --official-checkpoint: neas-s, neas-m or neas-l")
    format: str = option(
        None,
        "safetensors | onnx | timm (a folder: config.json, model.safetensors and a model card README.md, for "
        "timm.create_model('local-dir:DIR') and the Hugging Face Hub)",
        required=True,
    )
    out: str = option(
        None,
        "file to write (with --cascade or --format timm: a directory; with --cascade --single-file: a file)",
        required=True,
    )
    opset: int = option(17, "ONNX opset (9-21)", valid="9..21")
    paths: int | None = option(
        None, "export the sub-ensemble of the first J paths of the anytime order", default_help="all", valid=">= 1"
    )
    cascade: bool = option(
        False,
        "with --format onnx: the early-exit cascade fitted by `neas evaluate --cascade`, one ONNX file per step "
        "and cascade.json in the directory --out",
    )
    single_file: bool = option(
        False,
        "with --cascade: the cascade as ONE ONNX graph, the later steps inside If nodes, in the file --out "
        "(batch-1 serving from one file; outputs logits and stops)",
    )
    raw_logits: bool = option(
        False,
        "export the mean logits without the stored temperature (by default the exported model, a cascade's "
        "too, divides by it, as neas.load_ensemble's model does)",
    )
    license: str = option("other", "with --format timm: the model card's license, a Hub license id (mit, apache-2.0)")
    force: bool = option(False, "overwrite an existing --out")

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs), by the rule
        `neas export` applies when it writes (neas.recipes.tools; a detection run's: neas.detection.predict)."""
        out, force, checkpoint = values["out"], bool(values["force"]), values["checkpoint"]
        inputs = (checkpoint, values["official_checkpoint"])
        if run_kind(checkpoint) == "detect":  # (its other flags are the detector export's to refuse first)
            if values["format"] == "onnx" and not values["cascade"]:
                check_output(out, (checkpoint,), force, inside=(MODEL,))
        elif values["format"] == "timm" and not values["cascade"]:
            check_output_dir(out, inputs, force, writes="--format timm")
        elif values["cascade"] and not values["single_file"]:
            check_output_dir(out, inputs, force)
        else:
            check_output(out, inputs, force, inside=(MODEL, SUPERNET))

    def __post_init__(self):
        validate_fields(self)
        if self.single_file and not (self.cascade and self.format == "onnx"):
            given = [f"--format {self.format}"] if self.format != "onnx" else []
            given += [] if self.cascade else ["no --cascade"]
            raise NeasError(
                "--single-file writes the fitted cascade as one ONNX graph: it needs --cascade and --format onnx, "
                f"got {' and '.join(given)}"
            )
        if self.license != "other" and self.format != "timm":
            raise NeasError(f"--license is for the model card of --format timm, got --format {self.format}")
        if not self.license or not all(c.isalnum() or c in "-._" for c in self.license) or len(self.license) > 64:
            raise NeasError(f"--license: a Hub license id (letters, digits, '-', '.', '_'), got {self.license!r:.80}")
        if self.cascade and self.format != "onnx":
            raise NeasError(f"--cascade needs --format onnx, got --format {self.format}")
        if self.cascade and self.paths is not None:
            raise NeasError("--cascade exports every path in the fitted order; drop --paths")


@dataclass
class ReportCommand:
    """write RUN_DIR/report/index.html with the run's plots"""

    run: str = option(None, "a `neas run` directory", positional=True)


@dataclass
class LatencyTableCommand:
    """measure the per-(layer, op) latency table of a space on this machine"""

    space: str = option(None, "search space preset or YAML file", required=True)
    out: str = option(None, "JSON file to write", required=True)
    num_classes: int = option(1000, "classifier outputs", valid=f"1..{MAX_CLASSES}")
    batch_size: int = option(1, "images per timed forward", valid="1..4096")
    repeats: int = option(20, "timed runs per piece (the median is kept)", valid=">= 1")
    device: str = option("auto", DEVICE_HELP)
    runtime: str = option(
        "torch", "what the pieces and networks run in (onnxruntime: its CPU execution provider)", valid=RUNTIMES
    )
    fit_networks: int = option(
        20,
        "random ensembles timed end to end, in the same rounds as the pieces, to fit the "
        "per-ensemble and per-block overhead (0: no fit; else at least 2)",
        valid=">= 0",
    )
    validate: int = option(
        0,
        "also time this many other random ensembles end to end, twice, against the table's "
        "predictions (OUT.validation.json and .png; 0: none, else at least 2)",
        valid=">= 0",
    )
    force: bool = option(False, "overwrite an existing --out")

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs)."""
        check_output(values["out"], (values["space"],), bool(values["force"]))

    def __post_init__(self):
        validate_fields(self)
        for name in ("fit_networks", "validate"):
            if getattr(self, name) == 1:
                purpose = "fit" if name == "fit_networks" else "rank"
                raise NeasError(f"{name}: 1 network is too few to {purpose}; give 0 (none) or at least 2")


@dataclass
class SubImageNetCommand:
    """write the paper's 100-class subImageNet (250 train + 50 val per class)"""

    imagenet: str = option(None, "ImageNet root with train/<class>/ and val/<class>/", required=True)
    out: str = option(None, "where to write it", required=True)
    classes: int = option(100, "classes drawn", valid=">= 1")
    train_per_class: int = option(250, "training images per class", valid=">= 1")
    val_per_class: int = option(50, "validation images per class", valid=">= 1")
    seed: int = option(0, "seed of the draw", valid=">= 0")

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing, non-empty --out is refused before torch is imported (neas.config.check_outputs)."""
        check_new_folder(values["out"])

    def __post_init__(self):
        validate_fields(self)


@dataclass
class CarveTestCommand:
    """split a train-only image folder into fixed, stratified train/ and test/ parts"""

    src: str = option(None, "a folder with train/<class>/<image> (e.g. our CIFAR-10 copy)", positional=True)
    out: str = option(None, "where to write the carved copy", required=True)
    test_fraction: float = option(0.2, "fraction of every class moved to test/", valid="(0, 1)")
    split: str = option("train", "the sub-folder to split")

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing, non-empty --out is refused before torch is imported (neas.config.check_outputs)."""
        check_new_folder(values["out"])

    def __post_init__(self):
        validate_fields(self)


MAX_SYNTH_IMAGES = 1_000_000  # per split: 3,000 train the demo; COCO's train2017 has 118,287


@dataclass
class SynthDetectionCommand:
    """write a small synthetic COCO-format detection set of pasted 8x8 digits"""

    out: str = option(None, "where to write ROOT/annotations/ and ROOT/<split>/ (new or empty)", required=True)
    train_images: int = option(
        3000, "images in train2017 (what configs/detect-demo.yaml needs)", valid=f"1..{MAX_SYNTH_IMAGES}"
    )
    val_images: int = option(150, "images in val2017 (digits unseen in train2017)", valid=f"1..{MAX_SYNTH_IMAGES}")
    size: int = option(128, "image side in pixels (over 100: large objects too)", valid="16..4096")
    seed: int = option(0, "seed of the draw", valid=">= 0")

    def __post_init__(self):
        validate_fields(self)

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An --out that is not new, empty or an unfinished set of its own is refused before torch is
        imported (fuzz §12; neas.config.check_outputs; neas.detection.synth checks again when it writes)."""
        out = Path(values["out"])
        if out.exists():
            foreign = not out.is_dir() or (
                any(out.iterdir()) and not any(SYNTH_UNFINISHED in entry.name for entry in out.iterdir())
            )
            if foreign:  # (an unfinished set of its own is for the writer to recognise and replace)
                raise NeasError(
                    f"{out} already exists and is not an empty folder; choose another --out (nothing is overwritten)"
                )
