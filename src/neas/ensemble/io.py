"""The ensemble weights file: safetensors with the arch, space and classes in its metadata."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from neas.ensemble.model import EnsembleNet, build_ensemble
from neas.ensemble.official import load_official
from neas.errors import NeasError
from neas.io import load_matching, load_weights, save_tensors
from neas.records import CascadeRecord
from neas.runfiles import MODEL
from neas.space import EnsembleArch, SearchSpace

__all__ = ["FORMAT", "EnsembleFile", "load_ensemble", "load_model", "save_ensemble", "update_ensemble_file"]

FORMAT = "neas.ensemble/1"


def _field(meta: dict, key: str, kind, where: str, default=None):
    """``meta[key]`` parsed from JSON and checked to be a ``kind``; errors name the file and the field."""
    if key not in meta:
        return default
    try:
        value = meta[key] if kind is str else json.loads(meta[key])
    except (TypeError, ValueError):
        raise NeasError(f"{where}: metadata field {key!r} is not valid JSON") from None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise NeasError(
            f"{where}: metadata field {key!r} must be a {kind.__name__ if isinstance(kind, type) else kind}, "
            f"got {type(value).__name__}"
        )
    return value


def _positive(value) -> bool:
    """A finite number > 0 (not a bool): what a stored temperature must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class EnsembleFile:
    """What a neas ensemble weights file says about itself (its safetensors metadata), typed."""

    space: SearchSpace
    arch: EnsembleArch
    num_classes: int
    classes: tuple[str, ...] | None = None  # the training classes, in label order
    weights: str = "raw"  # ema | raw | official
    data: dict | None = None  # {"data": dataset, "data_dir": root}: what `neas evaluate` reads by default
    recipe: str | None = None
    holdout: float = 0.0  # the fraction of the training split held out (temperature, anytime order)
    path_order: dict | None = None  # {"order": [path, ...], "by": how it was decided, "path_top1": [...]}
    temperature: dict | None = None  # fit_temperature's record: {"temperature": T > 0, ...}
    # the fitted cascade (`neas retrain --cascade`, `neas evaluate --cascade`); a dict is read as its JSON
    cascade: CascadeRecord | None = None

    def __post_init__(self):
        t = None if self.temperature is None else self.temperature.get("temperature")
        if self.temperature is not None and not _positive(t):
            raise NeasError(f"temperature must be a finite number > 0, got {t!r}")
        order = self.order
        if sorted(order) != list(range(self.arch.num_paths)):
            raise NeasError(f"path_order must order the paths 0..{self.arch.num_paths - 1}, got {order}")
        if isinstance(self.cascade, dict):
            object.__setattr__(self, "cascade", CascadeRecord.from_json(self.cascade, self.arch.num_paths))

    @property
    def order(self) -> list[int]:
        """The anytime order of the paths (index order when none is stored)."""
        return list((self.path_order or {}).get("order", range(self.arch.num_paths)))

    @property
    def temperature_value(self) -> float | None:
        return None if self.temperature is None else float(self.temperature["temperature"])

    def metadata(self) -> dict[str, str]:
        fields = {
            "classes": list(self.classes) if self.classes is not None else None,
            "weights": self.weights,
            "data": self.data,
            "recipe": self.recipe,
            "holdout": self.holdout,
            "path_order": self.path_order,
            "temperature": self.temperature,
            "cascade": None if self.cascade is None else self.cascade.to_json(),
        }
        return {
            "format": FORMAT,
            "arch": json.dumps(self.arch.to_json()),
            "space": json.dumps(self.space.to_dict()),
            "num_classes": str(self.num_classes),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None},
        }

    @classmethod
    def from_metadata(cls, meta: dict, where: str) -> EnsembleFile:
        if meta.get("format") != FORMAT:
            raise NeasError(
                f"{where}: not a neas ensemble file (format {meta.get('format')!r}); "
                f"released .pth.tar files load with --official-checkpoint"
            )
        try:
            space = SearchSpace.from_dict(_field(meta, "space", dict, where, {}))
            arch = EnsembleArch.from_json(_field(meta, "arch", dict, where, {}))
        except NeasError as exc:
            raise NeasError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise NeasError(f"{where}: damaged metadata ({exc!r})") from None
        num_classes = _field(meta, "num_classes", int, where)
        if num_classes is None or num_classes < 1:
            raise NeasError(
                f"{where}: metadata field 'num_classes' must be a positive integer, got {meta.get('num_classes')!r}"
            )
        classes = _field(meta, "classes", list, where)
        try:
            return cls(
                space,
                arch,
                num_classes,
                tuple(map(str, classes)) if classes is not None else None,
                _field(meta, "weights", str, where, "raw"),
                _field(meta, "data", dict, where),
                _field(meta, "recipe", str, where),
                float(_field(meta, "holdout", (int, float), where, 0.0)),
                _field(meta, "path_order", dict, where),
                _field(meta, "temperature", dict, where),
                _field(meta, "cascade", dict, where),
            )
        except NeasError as exc:
            raise NeasError(f"{where}: {exc}") from None


def save_ensemble(net: EnsembleNet, path: str | Path, **fields) -> EnsembleFile:
    """Writes ``net``'s state_dict (released key layout) and what is needed to rebuild it, with the
    :class:`EnsembleFile` ``fields`` (weights, data, classes, path_order, temperature, ...)."""
    info = EnsembleFile(net.space, net.arch, net.num_classes, **fields)
    save_tensors(path, net.state_dict(), info.metadata())
    return info


def _read(path: str | Path) -> tuple[Path, dict, EnsembleFile]:
    """A neas weights file (or a run directory's ``model.safetensors``): its path, tensors and description."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    tensors, meta = load_weights(path)
    return path, tensors, EnsembleFile.from_metadata(meta, str(path))


def load_ensemble(path: str | Path, device="cpu") -> tuple[EnsembleNet, EnsembleFile]:
    """Rebuilds the ensemble of a weights file (or of a run directory's ``model.safetensors``)."""
    path, tensors, info = _read(path)
    net = build_ensemble(info.space, info.arch, info.num_classes)
    load_matching(net, tensors, f"{path}: the weights do not fit the stored arch")
    return net.to(device).eval(), info


def update_ensemble_file(path: str | Path, **fields) -> Path:
    """Replaces :class:`EnsembleFile` ``fields`` of a neas weights file (atomically; the weights are unchanged)."""
    path, tensors, info = _read(path)
    save_tensors(path, tensors, dataclasses.replace(info, **fields).metadata())
    return path


def load_model(checkpoint: str | None, official_checkpoint: str | None, arch: str | None):
    """The ensemble of a neas weights file, or of a released checkpoint (with ``arch``), and its
    :class:`EnsembleFile`."""
    if (checkpoint is None) == (official_checkpoint is None):
        raise NeasError(
            "give exactly one of --checkpoint (a neas weights file) or --official-checkpoint (a released .pth.tar)"
        )
    if official_checkpoint is not None:
        if arch is None:
            raise NeasError("--official-checkpoint needs --arch (neas-s, neas-m or neas-l)")
        net = load_official(official_checkpoint, arch)
        return net, EnsembleFile(net.space, net.arch, net.num_classes, weights="official")
    return load_ensemble(checkpoint)
