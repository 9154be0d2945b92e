"""The small commands — ``arch``, ``space``, ``export``, ``report`` — each a
schema (its options, declared once) and a ``__call__`` that runs it and returns what to print.
The CLI builds their flags from the schemas like the stages'. (``subimagenet`` and
``carve-test`` and ``latency-table`` live beside the code they run: ``neas.data.subimagenet``,
``neas.data.carve``, ``neas.recipes.latency``.)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from neas.config import option, validate_fields
from neas.ensemble.export import export
from neas.ensemble.io import load_model
from neas.errors import NeasError
from neas.io import check_output
from neas.rundir import MODEL, SUPERNET
from neas.space import SearchSpace, resolve_arch_and_space
from neas.space.arch import arch_file_record

__all__ = ["ArchCommand", "SpaceCommand", "ExportCommand", "ReportCommand"]


@dataclass
class ArchCommand:
    """print an ensemble architecture with its cost"""

    arch: str = option(None, "neas-s, neas-m, neas-l or an arch JSON file", positional=True)
    space: "str | None" = option(None, "search space preset or YAML file", default_help="the file's, else imagenet")
    input_size: "int | None" = option(None, "input resolution", default_help="the space's", valid=">= 8")
    num_classes: "int | None" = option(
        None, "classifier outputs", default_help="the arch file's num_classes, else 1000", valid=">= 1"
    )
    json: bool = option(False, "print one JSON object")

    def __call__(self) -> str:
        from neas.report.describe import arch_report, arch_summary

        arch, space = resolve_arch_and_space(self.arch, self.space)
        if self.input_size is not None:  # the space's own size checks (an absurd size is refused, not allocated)
            space = dataclasses.replace(space, input_size=self.input_size)
        num_classes = self.num_classes or _stored_num_classes(self.arch)
        if self.json:
            return json.dumps(arch_summary(space, arch, num_classes, self.input_size))
        return arch_report(space, arch, num_classes, self.input_size, title=str(self.arch))


def _stored_num_classes(arch_spec: str) -> int:
    """The class count an arch file was searched for (a search's ``arch.json`` says), else ImageNet's."""
    stored = arch_file_record(arch_spec).get("num_classes", 1000)
    if not isinstance(stored, int) or isinstance(stored, bool) or stored < 1:
        raise NeasError(f"{arch_spec}: field 'num_classes' must be a positive integer, got {stored!r:.40}")
    return stored


@dataclass
class SpaceCommand:
    """print a search space"""

    space: str = option(None, "preset (imagenet, cifar, tiny) or YAML file", positional=True)
    yaml: bool = option(False, "print the resolved space as YAML")

    def __call__(self) -> str:
        from neas.report.describe import space_report

        space = SearchSpace.resolve(self.space)
        return space.to_yaml() if self.yaml else space_report(space)


@dataclass
class ExportCommand:
    """export an ensemble as one module (safetensors or ONNX), verified"""

    checkpoint: "str | None" = option(None, "a neas weights file or retrain run directory")
    official_checkpoint: "str | None" = option(None, "a released NEAS .pth.tar file")
    arch: "str | None" = option(None, "with --official-checkpoint: neas-s, neas-m or neas-l")
    format: str = option(None, "safetensors | onnx", required=True)
    out: str = option(None, "file to write", required=True)
    opset: int = option(17, "ONNX opset (9-21)", valid="9..21")
    paths: "int | None" = option(
        None, "export the sub-ensemble of the first J paths of the anytime order", default_help="all", valid=">= 1"
    )
    force: bool = option(False, "overwrite an existing --out")

    def __post_init__(self):
        validate_fields(self)

    def __call__(self) -> str:

        check_output(self.out, (self.checkpoint, self.official_checkpoint), self.force, inside=(MODEL, SUPERNET))
        net, info = load_model(self.checkpoint, self.official_checkpoint, self.arch)
        notes = []
        if self.paths is not None and self.paths != net.arch.num_paths:
            if self.paths > net.arch.num_paths:
                raise NeasError(f"paths: the ensemble has {net.arch.num_paths} paths, got {self.paths}")
            chosen, total = info.order[: self.paths], net.arch.num_paths
            net = net.select(chosen)
            by = (info.path_order or {}).get("by", "path index")
            if info.temperature is not None:
                notes.append("the stored temperature was fitted for all paths and is not carried over")
            info = dataclasses.replace(
                info,
                space=net.space,
                arch=net.arch,
                temperature=None,
                path_order={"order": list(range(self.paths)), "by": f"paths {chosen} of the original, by {by}"},
            )
            notes.append(f"paths {chosen} of the {total}-path ensemble")
        temperature = info.temperature_value
        diff = export(net, self.format, self.out, info=info, opset=self.opset, temperature=temperature)
        if temperature is not None:
            notes.append(
                f"temperature {temperature:.3f} {'in the graph' if self.format == 'onnx' else 'in the metadata'}"
            )
        return (
            f"exported {self.format} to {self.out}{' (' + '; '.join(notes) + ')' if notes else ''}; "
            f"verified on a batch: max |difference| from PyTorch {diff:.2e}"
        )


@dataclass
class ReportCommand:
    """write RUN_DIR/report/index.html with the run's plots"""

    run: str = option(None, "a `neas run` directory", positional=True)

    def __call__(self) -> str:
        from neas.report import build_report

        return f"report: {build_report(self.run)}"
