"""The small commands — ``arch``, ``space``, ``latency-table``, ``export``, ``subimagenet``,
``carve-test``, ``report`` — each a schema (its options, declared once) and a ``__call__`` that
runs it and prints its result. The CLI builds their flags from the schemas like the stages'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from neas.config import option

__all__ = ["ArchCommand", "SpaceCommand", "LatencyTableCommand", "ExportCommand", "SubImageNetCommand", "CarveTestCommand", "ReportCommand"]


@dataclass
class ArchCommand:
    """print an ensemble architecture with its cost"""

    arch: str = option(None, "neas-s, neas-m, neas-l or an arch JSON file", positional=True)
    space: "str | None" = option(None, "search space preset or YAML file", default_help="the file's, else imagenet")
    input_size: "int | None" = option(None, "input resolution", default_help="the space's")
    num_classes: int = option(1000, "classifier outputs")
    json: bool = option(False, "print one JSON object")

    def __call__(self) -> None:
        from neas.report.describe import arch_report, arch_summary
        from neas.space import resolve_arch_and_space

        arch, space = resolve_arch_and_space(self.arch, self.space)
        if self.json:
            print(json.dumps(arch_summary(space, arch, self.num_classes, self.input_size)))
        else:
            print(arch_report(space, arch, self.num_classes, self.input_size, title=str(self.arch)))


@dataclass
class SpaceCommand:
    """print a search space"""

    space: str = option(None, "preset (imagenet, cifar, tiny) or YAML file", positional=True)
    yaml: bool = option(False, "print the resolved space as YAML")

    def __call__(self) -> None:
        from neas.report.describe import space_report
        from neas.space import SearchSpace

        space = SearchSpace.resolve(self.space)
        print(space.to_yaml() if self.yaml else space_report(space))


@dataclass
class LatencyTableCommand:
    """measure the per-(layer, op) latency table of a space on this machine"""

    space: str = option(None, "search space preset or YAML file", required=True)
    out: str = option(None, "JSON file to write", required=True)
    num_classes: int = option(1000, "classifier outputs")
    batch_size: int = option(1, "images per timed forward")
    repeats: int = option(20, "timed runs per piece (the median is kept)")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")

    def __call__(self) -> None:
        from tqdm import tqdm

        from neas.cost.latency import measure_latency_table
        from neas.dist import local_device
        from neas.space import SearchSpace

        space = SearchSpace.resolve(self.space)
        total = sum(1 for spec in space.layers for op in spec.ops if not op.is_skip)
        with tqdm(total=total, desc="latency table", disable=None) as bar:
            table = measure_latency_table(space, self.num_classes, local_device(self.device), self.batch_size, self.repeats, progress=bar)
        table.save(self.out)
        print(f"latency table of {space.name!r} on {table.device}: {self.out}")


@dataclass
class ExportCommand:
    """export an ensemble as one module (safetensors or ONNX), verified"""

    checkpoint: "str | None" = option(None, "a neas weights file or retrain run directory")
    official_checkpoint: "str | None" = option(None, "a released NEAS .pth.tar file")
    arch: "str | None" = option(None, "with --official-checkpoint: neas-s, neas-m or neas-l")
    format: str = option(None, "safetensors | onnx", required=True)
    out: str = option(None, "file to write", required=True)
    opset: int = option(17, "ONNX opset")

    def __call__(self) -> None:
        from neas.ensemble.export import export
        from neas.ensemble.io import load_model

        net, meta = load_model(self.checkpoint, self.official_checkpoint, self.arch)
        meta = {k: v for k, v in meta.items() if k not in ("format", "arch", "space", "num_classes")}
        diff = export(net, self.format, self.out, meta=meta, opset=self.opset)
        print(f"exported {self.format} to {self.out}; verified on a batch: max |difference| from PyTorch {diff:.2e}")


@dataclass
class SubImageNetCommand:
    """write the paper's 100-class subImageNet (250 train + 50 val per class)"""

    imagenet: str = option(None, "ImageNet root with train/<class>/ and val/<class>/", required=True)
    out: str = option(None, "where to write it", required=True)
    classes: int = option(100, "classes drawn")
    train_per_class: int = option(250, "training images per class")
    val_per_class: int = option(50, "validation images per class")
    seed: int = option(0, "seed of the draw")

    def __call__(self) -> None:
        from neas.data.subimagenet import make_subimagenet

        listing = make_subimagenet(self.imagenet, self.out, self.classes, self.train_per_class, self.val_per_class, self.seed)
        print(f"subImageNet: {len(listing['classes'])} classes in {self.out} (listed in {self.out}/classes.json)")


@dataclass
class CarveTestCommand:
    """split a train-only image folder into fixed, stratified train/ and test/ parts"""

    src: str = option(None, "a folder with train/<class>/<image> (e.g. our CIFAR-10 copy)", positional=True)
    out: str = option(None, "where to write the carved copy", required=True)
    test_fraction: float = option(0.2, "fraction of every class moved to test/")
    split: str = option("train", "the sub-folder to split")

    def __call__(self) -> None:
        from neas.data.carve import carve_test_split

        listing = carve_test_split(self.src, self.out, self.test_fraction, self.split)
        test = sum(len(v) for v in listing["test"].values())
        print(f"carved: {listing['train']} train / {test} test images in {self.out} (test files listed in {self.out}/split.json)")


@dataclass
class ReportCommand:
    """write RUN_DIR/report/index.html with the run's plots"""

    run: str = option(None, "a `neas run` directory", positional=True)

    def __call__(self) -> None:
        from neas.report import build_report

        print(f"report: {build_report(self.run)}")
