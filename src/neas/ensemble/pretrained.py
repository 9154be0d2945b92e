"""Starting weights for a retraining: fine-tuning (``neas retrain --init FILE``, issue 38).

The file is read without executing anything from it:

- a neas weights file (``model.safetensors`` of a retraining), or a ``neas retrain`` / ``neas run``
  directory holding one (:func:`neas.ensemble.io.model_file`): its tensors, space, arch and classes;
- a safetensors file without neas metadata, e.g. the ``model.safetensors`` of a timm folder
  (``config.json`` beside it): its tensors, and the input size of ``config.json``'s ``pretrained_cfg``;
- a released ``.pth.tar`` (a torch file) through the safe loader of :mod:`neas.ensemble.official`:
  its EMA tensors, in the imagenet space at 224 pixels.

Every tensor of the network being trained must be in the file under its name with its shape, and the
file may hold no other — except the classifiers (``classifiers.<k>.weight`` / ``.bias``), which keep
their fresh initialisation when the file was trained on other classes (another count, or other class
names when the file records them). A file of another arch, space or input size is refused, naming the
first key that differs (or the space field) and what was expected. Which of these a file is comes from
its first bytes (:func:`neas.ensemble.official.checkpoint_format`, as the timm loader tells them apart);
anything else (an ONNX file, say) is refused naming ``--init``, the file and the forms it takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from neas.ensemble.io import EnsembleFile, model_file
from neas.ensemble.official import IGNORED_SUFFIXES, NOT_A_CHECKPOINT, checkpoint_format, read_official_state_dict
from neas.errors import NeasError
from neas.io import load_weights, read_metadata
from neas.runfiles import TIMM_CONFIG
from neas.space import EnsembleArch, SearchSpace

__all__ = ["InitWeights", "check_init", "load_init", "read_init"]

HEAD_PREFIX = "classifiers."
# the space fields that change what a network computes; the others (name, ops, split range, K, dropout)
# only bound the search or the training
_GEOMETRY = (
    "input_size",
    "in_channels",
    "stem_channels",
    "stem_stride",
    "first_block_channels",
    "stages",
    "head_channels",
    "feature_channels",
    "width_mult",
)


@dataclass(frozen=True)
class InitWeights:
    """The tensors of an ``--init`` file and what it says about the network they belong to.

    Attributes:
        path: the file read.
        kind: ``neas`` (a neas weights file), ``safetensors`` (a plain one, e.g. a timm folder's) or
            ``released`` (the authors' ``.pth.tar``).
        tensors: its state_dict.
        space: the space it was trained in, when it says (a neas file; the imagenet space for a released one).
        input_size: the input resolution it was trained at, when known.
        arch: its arch, when it says (a neas file).
        classes: its class names, when it records them (a neas file).
    """

    path: Path
    kind: str
    tensors: dict[str, torch.Tensor]
    space: SearchSpace | None = None
    input_size: int | None = None
    arch: EnsembleArch | None = None
    classes: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int | None:
        """The rows of its first classifier (None without one)."""
        head = self.tensors.get(f"{HEAD_PREFIX}0.weight")
        return int(head.shape[0]) if head is not None and head.dim() == 2 else None

    def describe(self) -> str:
        """What the file holds, for an error message."""
        if self.arch is not None and self.space is not None:
            return f"the file holds arch {self.arch} in space {self.space.name!r} at {self.space.input_size} px"
        if self.input_size is not None:
            return f"the file was trained at {self.input_size} px"
        return "the file says nothing about its arch"


def _timm_input_size(folder: Path) -> int | None:
    """``pretrained_cfg.input_size`` ([3, S, S]) of a timm folder's ``config.json``, when there is one."""
    config = folder / TIMM_CONFIG
    if not config.is_file():
        return None
    try:
        size = json.loads(config.read_text(encoding="utf-8")).get("pretrained_cfg", {}).get("input_size")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise NeasError(f"{config}: not a timm config (a JSON object with 'pretrained_cfg')") from None
    if size is None:
        return None
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) for v in size) and size[1] == size[2]):
        raise NeasError(f"{config}: pretrained_cfg.input_size must be [3, S, S], got {size!r:.60}")
    return size[1]


# what --init takes, for its error messages
INIT_FORMS = (
    "expected a neas model.safetensors, a `neas retrain` / `neas run` directory, a timm folder "
    "(`neas export --format timm`) or a released .pth.tar"
)


def _released(path: Path, spec) -> dict[str, torch.Tensor]:
    """A released checkpoint's EMA tensors through the safe loader, never unpickled freely; errors name --init."""
    try:
        state = read_official_state_dict(path)
    except NeasError as exc:
        raise NeasError(f"--init {spec}: {str(exc).removeprefix(f'{path}: ')}; {INIT_FORMS}") from None
    return {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}


def read_init(spec: str | Path) -> InitWeights:
    """Reads an ``--init`` file (see the module docstring); errors name the file.

    Args:
        spec: a neas weights file, a run directory, a timm folder, a plain safetensors file or a
            released ``.pth.tar``.

    Returns:
        The file's tensors and what it says about them.

    Example::

        weights = read_init("runs/pretrain")          # a neas retrain directory
        check_init(weights, net.space, net.state_dict(), classes)
    """
    path = model_file(spec)
    if not path.is_file():
        raise NeasError(f"--init {spec}: no such file ({INIT_FORMS})")
    kind = checkpoint_format(path)
    if kind is None:
        raise NeasError(f"--init {spec}: {NOT_A_CHECKPOINT}; {INIT_FORMS}")
    if kind == "torch":
        space = SearchSpace.preset("imagenet")
        return InitWeights(path, "released", _released(path, spec), space, space.input_size)
    if "format" not in read_metadata(path):  # a plain safetensors file (a timm folder's)
        tensors, _ = load_weights(path)
        return InitWeights(path, "safetensors", tensors, input_size=_timm_input_size(path.parent))
    tensors, meta = load_weights(path)
    info = EnsembleFile.from_metadata(meta, str(path))
    return InitWeights(path, "neas", tensors, info.space, info.space.input_size, info.arch, info.classes)


def _heads_differ(weights: InitWeights, num_classes: int, classes: list[str] | None) -> str | None:
    """Why the file's classifiers do not fit the data (None when they do)."""
    if weights.num_classes is not None and weights.num_classes != num_classes:
        return f"the file has {weights.num_classes} classes, the data {num_classes}"
    if weights.classes is not None and classes is not None and list(weights.classes) != list(classes):
        return "the file was trained on other classes"
    return None


def _check_geometry(weights: InitWeights, space: SearchSpace) -> None:
    where = f"--init {weights.path}"
    if weights.input_size is not None and weights.input_size != space.input_size:
        raise NeasError(
            f"{where}: trained at input size {weights.input_size}, this run's space {space.name!r} is "
            f"{space.input_size} px (a file of another input size); use the space it was trained in"
        )
    if weights.space is None:
        return
    theirs, ours = weights.space.to_dict(), space.to_dict()
    for key in _GEOMETRY:
        if theirs[key] != ours[key]:
            raise NeasError(
                f"{where}: space field {key!r} is {theirs[key]!r:.80} in the file, {ours[key]!r:.80} in this "
                f"run's space {space.name!r} (a file of another space)"
            )


def check_init(
    weights: InitWeights, space: SearchSpace, expected: dict[str, torch.Tensor], classes: list[str]
) -> list[str]:
    """Checks that ``weights`` fit a network of ``space`` with state_dict ``expected`` trained on
    ``classes``, before anything is written.

    Args:
        weights: what :func:`read_init` read.
        space: the space of the network to be trained.
        expected: its state_dict (or tensors of the same names and shapes, e.g. on the meta device).
        classes: the training data's class names, in label order.

    Returns:
        The keys that keep their fresh initialisation: the classifiers when the classes differ, else none.

    Raises:
        NeasError: naming the file, the first key that is missing, extra or of another shape (with the
            expected shape), or the space field that differs.
    """
    reason = _heads_differ(weights, len(classes), classes)
    fresh = [k for k in expected if k.startswith(HEAD_PREFIX)] if reason else []
    skip = set(fresh)
    where = f"--init {weights.path}: does not fit the ensemble being trained"
    for key, tensor in expected.items():
        if key in skip:
            continue
        if key not in weights.tensors:
            raise NeasError(f"{where}: it has no tensor {key!r} (expected {tuple(tensor.shape)}); {weights.describe()}")
        got = weights.tensors[key]
        if got.shape != tensor.shape:
            raise NeasError(
                f"{where}: {key!r} is {tuple(got.shape)} in the file, expected {tuple(tensor.shape)}; "
                f"{weights.describe()}"
            )
    extra = [k for k in weights.tensors if k not in expected and not (reason and k.startswith(HEAD_PREFIX))]
    if extra:
        raise NeasError(f"{where}: it has a tensor {extra[0]!r} that the ensemble lacks; {weights.describe()}")
    _check_geometry(weights, space)
    return fresh


def load_init(net: nn.Module, weights: InitWeights, classes: list[str]) -> str:
    """Copies the file's tensors into ``net`` (after :func:`check_init`); the classifiers keep their
    fresh initialisation when the classes differ.

    Args:
        net: a freshly built :class:`~neas.ensemble.model.EnsembleNet`.
        weights: what :func:`read_init` read.
        classes: the training data's class names, in label order.

    Returns:
        One line saying what was loaded and whether the heads were re-initialised.

    Example::

        net = build_ensemble(space, arch, len(classes))
        log.info(load_init(net, read_init("runs/pretrain"), classes))
    """
    own = net.state_dict()
    fresh = check_init(weights, net.space, own, classes)
    state = {k: own[k] if k in fresh else weights.tensors[k] for k in own}
    net.load_state_dict(state, strict=True)
    loaded = len(own) - len(fresh)
    if fresh:
        reason = _heads_differ(weights, len(classes), classes)
        return (
            f"init: {loaded} tensors from {weights.path}; the {len(fresh)} classifier tensors re-initialised ({reason})"
        )
    return f"init: all {loaded} tensors from {weights.path}, heads included (same classes)"
