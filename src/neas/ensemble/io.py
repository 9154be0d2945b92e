"""The ensemble weights file: safetensors with the arch, space and classes in its metadata.

Two checks guard what a file says about itself (issue 40). Every field is range-checked where it is
read (:class:`EnsembleFile`: a temperature in ``records.TEMPERATURE_RANGE``, one distinct class name per
class, path orders that are permutations of the paths, a holdout fraction in [0, 1), classifier
tensors with ``num_classes`` rows before anything is built). And the metadata that changes what the
file computes (:data:`RECORD_KEYS`) is covered by ``record_sha256`` (:func:`neas.io.record_sha256`),
beside the tensors' ``sha256``: a hand edit that passes the range checks is refused as damage. Files
written before the record hash load with the range checks alone; the next neas write adds it.

The file also says how an image becomes the model's input (``preprocessing``,
:class:`neas.data.preprocess.Preprocessing`) and carries the fitted temperature; :func:`load_ensemble`
returns a network that applies that temperature (one rule for the Python model, the ONNX file and the
timm model: docs/DECISIONS.md, "One temperature rule") and whose ``pretrained_cfg`` is timm's data config,
so ``timm.data.resolve_data_config(model=net)`` finds the transform.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from neas.data.preprocess import TRAIN_CROP_PCT, Preprocessing
from neas.ensemble.model import EnsembleNet, build_ensemble
from neas.ensemble.official import RELEASED_PREPROCESSING, load_official
from neas.errors import NeasError, show
from neas.io import load_matching, load_weights, read_json, read_metadata, record_sha256, save_tensors
from neas.records import CascadeRecord, check_order, check_temperature
from neas.runfiles import MODEL, TIMM_CONFIG, PipelineLayout
from neas.space import EnsembleArch, SearchSpace
from neas.space.presets import TIMM_NAMES

__all__ = [
    "FORMAT",
    "RECORD_KEYS",
    "TIMM_ARCHITECTURES",
    "EnsembleFile",
    "check_timm_folder",
    "load_ensemble",
    "load_model",
    "save_ensemble",
    "update_ensemble_file",
]

FORMAT = "neas.ensemble/1"
RECORD_SHA256 = "record_sha256"
# the metadata that changes what the file computes (or what a refit on its held-out part uses), as
# stored strings: covered by its record hash. ``data`` (where the dataset lives), ``weights`` and
# ``recipe`` (labels) stay editable.
RECORD_KEYS = ("format", "arch", "space", "num_classes", "classes", "holdout", "path_order", "temperature", "cascade")
# covered by the record hash when present: files written before a key existed keep their hash
LATER_RECORD_KEYS = ("preprocessing",)


def _record_hash(meta: dict) -> str:
    later = {key: meta[key] for key in LATER_RECORD_KEYS if key in meta}
    return record_sha256({**{key: meta.get(key) for key in RECORD_KEYS}, **later})


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


def _number(value) -> bool:
    """A finite number, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_classes(classes, num_classes: int) -> None:
    if classes is None:
        return
    if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise NeasError(f"classes must be distinct names (strings), got {list(classes)!r:.80}")
    if len(classes) != num_classes:
        raise NeasError(f"classes names {len(classes)} classes, but the model has num_classes = {num_classes}")


def _check_path_order(path_order, k: int) -> None:
    """``{"order": [...], "by": text, "path_top1": [K numbers in [0, 1]]}``; every key optional."""
    if path_order is None:
        return
    if not isinstance(path_order, dict):
        raise NeasError(f"path_order must be a JSON object, got {type(path_order).__name__}")
    if "order" in path_order:
        check_order(path_order["order"], k, "path_order: 'order'")
    top1 = path_order.get("path_top1")
    if top1 is not None and not (
        isinstance(top1, list) and len(top1) == k and all(_number(a) and 0 <= a <= 1 for a in top1)
    ):
        raise NeasError(f"path_order: 'path_top1' must be {k} numbers in [0, 1], got {top1!r:.80}")


def _check_data(data) -> None:
    if data is not None and not all(isinstance(data.get(key), (str, type(None))) for key in ("data", "data_dir")):
        raise NeasError(f"data: 'data' and 'data_dir' must be strings or null, got {data!r:.80}")


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
    # how an image file becomes the model's input; None in files written before it was recorded (see
    # :attr:`preprocess`); a dict is read as its JSON
    preprocessing: Preprocessing | None = None

    def __post_init__(self):
        k = self.arch.num_paths
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 1:
            raise NeasError(f"num_classes must be a positive integer, got {self.num_classes!r:.40}")
        _check_classes(self.classes, self.num_classes)
        if not (_number(self.holdout) and 0 <= self.holdout < 1):
            raise NeasError(f"holdout must be a fraction in [0, 1), got {self.holdout!r:.40}")
        if self.temperature is not None:
            if not isinstance(self.temperature, dict):
                raise NeasError(f"temperature must be a JSON object, got {type(self.temperature).__name__}")
            check_temperature(self.temperature.get("temperature"), "temperature: 'temperature'")
        _check_path_order(self.path_order, k)
        _check_data(self.data)
        if isinstance(self.cascade, dict):
            object.__setattr__(self, "cascade", CascadeRecord.from_json(self.cascade, k))
        elif self.cascade is not None:
            check_order(self.cascade.order, k, "cascade: 'order'")
        if isinstance(self.preprocessing, dict):
            object.__setattr__(self, "preprocessing", Preprocessing.from_json(self.preprocessing, "metadata"))
        if self.preprocessing is not None and self.preprocessing.input_size != self.space.input_size:
            raise NeasError(
                f"preprocessing: 'input_size' is {self.preprocessing.input_size}, but the space's input size is "
                f"{self.space.input_size}"
            )

    @property
    def order(self) -> list[int]:
        """The anytime order of the paths (index order when none is stored)."""
        return list((self.path_order or {}).get("order", range(self.arch.num_paths)))

    @property
    def temperature_value(self) -> float | None:
        return None if self.temperature is None else float(self.temperature["temperature"])

    @property
    def preprocess(self) -> Preprocessing:
        """How an image file becomes the model's input: the recorded transform; for a file written before
        it was recorded, the transform of a model trained on images held in memory (``crop_pct`` 1.0,
        docs/DECISIONS.md)."""
        return self.preprocessing or Preprocessing(self.space.input_size, TRAIN_CROP_PCT)

    def pretrained_cfg(self) -> dict:
        """timm's ``pretrained_cfg`` of the model (the data config, classes, first conv and classifiers):
        what ``timm.data.resolve_data_config(model=...)`` reads."""
        pre = self.preprocess
        cfg = {
            **pre.data_config(),
            "num_classes": self.num_classes,
            "first_conv": "conv_stem",
            "classifier": [f"classifiers.{k}" for k in range(self.arch.num_paths)],
        }
        return cfg | ({"label_names": list(self.classes)} if self.classes else {})

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
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_json(),
        }
        meta = {
            "format": FORMAT,
            "arch": json.dumps(self.arch.to_json()),
            "space": json.dumps(self.space.to_dict()),
            "num_classes": str(self.num_classes),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None},
        }
        return meta | {RECORD_SHA256: _record_hash(meta)}

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
            info = cls(
                space,
                arch,
                num_classes,
                tuple(classes) if classes is not None else None,
                _field(meta, "weights", str, where, "raw"),
                _field(meta, "data", dict, where),
                _field(meta, "recipe", str, where),
                float(_field(meta, "holdout", (int, float), where, 0.0)),
                _field(meta, "path_order", dict, where),
                _field(meta, "temperature", dict, where),
                _field(meta, "cascade", dict, where),
                _field(meta, "preprocessing", dict, where),
            )
        except NeasError as exc:
            raise NeasError(f"{where}: {exc}") from None
        # after the range checks, which name the field; a file without the hash predates it
        if RECORD_SHA256 in meta and meta[RECORD_SHA256] != _record_hash(meta):
            keys = ", ".join([*RECORD_KEYS[1:], *(k for k in LATER_RECORD_KEYS if k in meta)])
            raise NeasError(
                f"{where}: damaged or edited: its metadata ({keys}) does not match the "
                f"SHA-256 recorded with it; use an intact copy, or write the file with neas, not by hand"
            )
        return info


def save_ensemble(net: EnsembleNet, path: str | Path, **fields) -> EnsembleFile:
    """Writes ``net``'s weights (the released checkpoints' key layout) and what is needed to rebuild
    it (arch, space, num_classes) to a safetensors file, atomically.

    Args:
        net: the ensemble.
        path: the file to write (``model.safetensors`` in a run directory).
        **fields: further :class:`EnsembleFile` fields: ``classes`` (names in label order),
            ``weights``, ``data``, ``recipe``, ``holdout``, ``path_order``, ``temperature``, ``cascade``.

    Returns:
        The :class:`EnsembleFile` written, as :func:`load_ensemble` will read it.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from neas import EnsembleArch, SearchSpace, build_ensemble, load_ensemble, save_ensemble
        >>> space = SearchSpace.preset("tiny")
        >>> net = build_ensemble(space, EnsembleArch.sample(space, 0), num_classes=3)
        >>> path = Path(tempfile.mkdtemp()) / "model.safetensors"
        >>> save_ensemble(net, path, classes=("cat", "dog", "frog")).num_classes
        3
        >>> load_ensemble(path)[1].classes
        ('cat', 'dog', 'frog')
    """
    info = EnsembleFile(net.space, net.arch, net.num_classes, **fields)
    save_tensors(path, net.state_dict(), info.metadata())
    return info


def model_file(path: str | Path) -> Path:
    """The weights file ``path`` names: the file itself, a retraining's ``model.safetensors``, or that of
    a ``neas run`` directory's ``retrain/`` (the final ensemble, as ``neas report`` shows it)."""
    path = Path(path)
    if path.is_dir() and not (path / MODEL).exists() and (PipelineLayout(path).retrain / MODEL).exists():
        return PipelineLayout(path).retrain / MODEL
    return path / MODEL if path.is_dir() else path


# the timm names a `neas export --format timm` folder's config.json may give (neas.ensemble.timm_registry)
TIMM_ARCHITECTURES = {"neas_ensemble": None, **TIMM_NAMES}


def _timm_model(config: dict, folder: Path) -> tuple[EnsembleArch, SearchSpace, dict]:
    """The arch, space and model arguments a timm ``config.json`` gives (checked; errors name the field)."""
    name, args = config.get("architecture"), config.get("model_args") or {}
    if name not in TIMM_ARCHITECTURES:
        names = ", ".join(TIMM_ARCHITECTURES)
        raise NeasError(f"{folder / TIMM_CONFIG}: 'architecture' must be one of {names}, got {show(name, 60)}")
    if not isinstance(args, dict):
        raise NeasError(f"{folder / TIMM_CONFIG}: 'model_args' must be an object, got {type(args).__name__}")
    try:
        if TIMM_ARCHITECTURES[name] is not None:
            return EnsembleArch.preset(TIMM_ARCHITECTURES[name]), SearchSpace.preset("imagenet"), args
        return EnsembleArch.from_json(args.get("arch")), SearchSpace.from_dict(args.get("space")), args
    except (NeasError, TypeError, AttributeError) as exc:
        raise NeasError(f"{folder / TIMM_CONFIG}: 'model_args': {exc}") from None


def check_timm_folder(folder: str | Path) -> EnsembleFile:
    """A folder written by ``neas export --format timm``: its ``config.json`` (timm's architecture, model
    arguments and ``pretrained_cfg``) must describe the model its ``model.safetensors`` records (arch, space,
    classes, temperature, preprocessing). Returns the weights file's record; a difference is one
    :class:`NeasError` line naming the field and both values."""
    folder = Path(folder)
    config = read_json(folder / TIMM_CONFIG, "timm config", ("architecture", "pretrained_cfg"))
    weights = folder / MODEL
    if not weights.is_file():
        raise NeasError(f"{folder}: no {MODEL} beside {TIMM_CONFIG}")
    info = EnsembleFile.from_metadata(read_metadata(weights), str(weights))
    arch, space, args = _timm_model(config, folder)
    cfg = config["pretrained_cfg"] if isinstance(config["pretrained_cfg"], dict) else {}
    pre = info.preprocess
    named = (
        "model_args '{}'"
        if config["architecture"] == "neas_ensemble"
        else f"'architecture' {config['architecture']}: {{}}"
    )
    pairs = [
        (named.format("arch"), arch.to_json(), info.arch.to_json()),
        (named.format("space"), space.to_dict(), info.space.to_dict()),
        ("model_args 'temperature'", args.get("temperature"), info.temperature_value),
        ("'num_classes'", config.get("num_classes", cfg.get("num_classes")), info.num_classes),
        ("pretrained_cfg 'input_size'", list(cfg.get("input_size") or []), [space.in_channels, *[pre.input_size] * 2]),
        ("pretrained_cfg 'crop_pct'", cfg.get("crop_pct"), pre.crop_pct),
        ("pretrained_cfg 'interpolation'", cfg.get("interpolation"), pre.interpolation),
        ("pretrained_cfg 'mean'", list(cfg.get("mean") or []), list(pre.mean)),
        ("pretrained_cfg 'std'", list(cfg.get("std") or []), list(pre.std)),
    ]
    labels = config.get("label_names", cfg.get("label_names"))
    if labels is not None and info.classes is not None:
        pairs.append(("'label_names'", list(labels) if isinstance(labels, list) else labels, list(info.classes)))
    for field, got, recorded in pairs:
        if got != recorded:
            raise NeasError(
                f"{folder}: {TIMM_CONFIG} does not match {MODEL}: {field} is {show(got, 80)}, the weights file "
                f"records {show(recorded, 80)}"
            )
    return info


def _read(path: str | Path) -> tuple[Path, dict, EnsembleFile]:
    """A neas weights file (or a run directory's, or a timm folder's, checked against its ``config.json``):
    its path, tensors and description (:func:`model_file`)."""
    if Path(path).is_dir() and (Path(path) / TIMM_CONFIG).is_file():
        check_timm_folder(path)
    path = model_file(path)
    tensors, meta = load_weights(path)
    return path, tensors, EnsembleFile.from_metadata(meta, str(path))


def _check_classifiers(tensors: dict, info: EnsembleFile, path: Path) -> None:
    """Every path's classifier has ``num_classes`` rows: checked before a model is built, so an absurd
    ``num_classes`` is named, not allocated."""
    heads = [f"classifiers.{j}.weight" for j in range(info.arch.num_paths)]
    for key in heads:
        rows = tensors[key].shape[0] if key in tensors and tensors[key].dim() > 0 else None
        if rows != info.num_classes:
            raise NeasError(
                f"{path}: metadata field 'num_classes' is {info.num_classes}, but the classifier tensor {key} "
                f"{'is missing' if rows is None else f'has {rows} rows'}"
            )


def describe(net: EnsembleNet, info: EnsembleFile, calibrated: bool = True) -> EnsembleNet:
    """``net`` as its file describes it: ``net.temperature`` the stored temperature (with ``calibrated``;
    else None) and ``net.pretrained_cfg`` timm's data config (:meth:`EnsembleFile.pretrained_cfg`)."""
    net.temperature = info.temperature_value if calibrated else None
    net.pretrained_cfg = info.pretrained_cfg()
    return net


def load_ensemble(path: str | Path, device="cpu", calibrated: bool = True) -> tuple[EnsembleNet, EnsembleFile]:
    """Rebuilds the ensemble of a weights file, checked against the SHA-256s it records.

    Args:
        path: a ``model.safetensors`` written by neas (:func:`save_ensemble`, ``neas retrain``), a
            ``neas retrain`` / ``neas run`` directory holding one, or a folder written by
            ``neas export --format timm``.
        device: where to put the network.
        calibrated: ``net(x)`` returns the mean of the paths' logits divided by the stored temperature
            (when the file has one); False: the raw mean (``net.temperature`` is None). ``net.path_logits(x)``
            is always raw. The ONNX export and the timm model apply the same rule.

    Returns:
        ``(net, info)``: the :class:`~neas.ensemble.model.EnsembleNet` in eval mode (``net.pretrained_cfg``:
        timm's data config, so ``timm.data.resolve_data_config(model=net)`` gives its transform), and the
        :class:`EnsembleFile` describing it (``classes``, ``space``, ``arch``, ``temperature``, ...).

    Raises:
        NeasError: a missing, damaged or hand-edited file, naming it.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import torch
        >>> from neas import EnsembleArch, SearchSpace, build_ensemble, load_ensemble, save_ensemble
        >>> space = SearchSpace.preset("tiny")
        >>> run = Path(tempfile.mkdtemp())  # a retrain's run directory
        >>> _ = save_ensemble(build_ensemble(space, EnsembleArch.sample(space, 0), 3), run / "model.safetensors")
        >>> net, info = load_ensemble(run)
        >>> net(torch.zeros(1, 3, info.space.input_size, info.space.input_size)).shape
        torch.Size([1, 3])
    """
    path, tensors, info = _read(path)
    _check_classifiers(tensors, info, path)
    net = build_ensemble(info.space, info.arch, info.num_classes)
    load_matching(net, tensors, f"{path}: the weights do not fit the stored arch")
    return describe(net.to(device).eval(), info, calibrated), info


def update_ensemble_file(path: str | Path, **fields) -> Path:
    """Replaces :class:`EnsembleFile` ``fields`` of a neas weights file (atomically; the weights are unchanged)."""
    path, tensors, info = _read(path)
    save_tensors(path, tensors, dataclasses.replace(info, **fields).metadata())
    return path


def load_model(checkpoint: str | None, official_checkpoint: str | None, arch: str | None):
    """The ensemble of a neas weights file, or of a released checkpoint (with ``arch``), and its
    :class:`EnsembleFile`; raw: ``net(x)`` applies no temperature (the commands apply the stored one
    where they report or export calibrated numbers)."""
    if (checkpoint is None) == (official_checkpoint is None):
        raise NeasError(
            "give exactly one of --checkpoint (a neas weights file) or --official-checkpoint (a released .pth.tar)"
        )
    if checkpoint is not None and arch is not None:
        raise NeasError("--arch is for --official-checkpoint; a neas weights file (--checkpoint) stores its arch")
    if official_checkpoint is not None:
        if arch is None:
            raise NeasError("--official-checkpoint needs --arch (neas-s, neas-m or neas-l)")
        net = load_official(official_checkpoint, arch)
        info = EnsembleFile(
            net.space, net.arch, net.num_classes, weights="official", preprocessing=RELEASED_PREPROCESSING
        )
        return describe(net, info, calibrated=False), info
    return load_ensemble(checkpoint, calibrated=False)
