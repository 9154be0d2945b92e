"""Loading the authors' released NEAS-S/M/L checkpoints without executing code from them.

The released ``.pth.tar`` files are ``torch.save`` dicts holding ``state_dict`` (often also
``state_dict_ema``) plus the training arguments as a pickled ``argparse.Namespace``. Before
anything is unpickled, the file's globals are listed (``get_unsafe_globals_in_checkpoint``);
any global beyond the tensor machinery and ``argparse.Namespace`` refuses the file. It is
then read with ``torch.load(weights_only=True)``, whose unpickler builds only tensors, plain
containers and the allowlisted ``Namespace`` (a plain attribute bag), never calling code.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch

from neas.data.preprocess import DEFAULT_CROP_PCT, Preprocessing
from neas.ensemble.model import EnsembleNet, build_ensemble
from neas.errors import NeasError
from neas.io import load_matching
from neas.space import EnsembleArch, SearchSpace
from neas.space.presets import ARCH_PRESETS

__all__ = [
    "IGNORED_SUFFIXES",
    "NOT_A_CHECKPOINT",
    "RELEASED_PREPROCESSING",
    "checkpoint_format",
    "load_official",
    "read_official_state_dict",
]

# how the released models were evaluated: ImageNet at 224 px, timm's resize to 256 and centre crop
RELEASED_PREPROCESSING = Preprocessing(224, DEFAULT_CROP_PCT)

_ALLOWED_GLOBALS = {"argparse.Namespace"}
IGNORED_SUFFIXES = (
    "conv_dwl.weight",
    "bn4.weight",
    "bn4.bias",
    "bn4.running_mean",
    "bn4.running_var",
    "bn4.num_batches_tracked",
)


NOT_A_CHECKPOINT = "not a checkpoint (neither a torch .pth.tar nor a safetensors file)"


def checkpoint_format(path: Path) -> str | None:
    """How a weights file is stored, by its first bytes (nothing is read further): ``torch`` (a torch zip or
    a legacy pickle: a released ``.pth.tar``), ``safetensors`` (an 8-byte header length, then a JSON object:
    a neas or timm ``model.safetensors``), or None for anything else (:data:`NOT_A_CHECKPOINT`)."""
    with path.open("rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return "torch"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    return None


def _load(path: Path) -> dict:
    if not path.is_file():
        raise NeasError(f"{path}: no such checkpoint file")
    try:
        if zipfile.is_zipfile(path):
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
            refused = sorted(unsafe - _ALLOWED_GLOBALS)
            if refused:
                raise NeasError(
                    f"{path}: refused — the checkpoint references code objects ({', '.join(refused)}); "
                    "only tensors, containers and argparse.Namespace are accepted, and nothing was executed"
                )
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except NeasError:
        raise
    except pickle.UnpicklingError as exc:  # torch's message advises weights_only=False: not ours to repeat
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        found = re.search(r"Unsupported global: GLOBAL [^\s]+|Unsupported operand[^.\n]*", text)
        detail = found.group(0) if found else "it holds objects other than tensors"
        raise NeasError(
            f"{path}: refused — {detail}; only tensors, containers and argparse.Namespace are accepted, "
            f"and nothing was executed"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise NeasError(
            f"{path}: not a readable checkpoint (truncated or not a torch file: {str(exc).splitlines()[0]})"
        ) from None
    if isinstance(obj, dict) and ("state_dict" in obj or "state_dict_ema" in obj):
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise NeasError(f"{path}: not a checkpoint (expected a dict with 'state_dict' or a state_dict of tensors)")


def read_official_state_dict(path: str | Path, ema: bool = True) -> dict[str, torch.Tensor]:
    """The released state_dict (EMA weights when present and ``ema``), 'module.' prefixes removed."""
    obj = _load(Path(path))
    state = obj.get("state_dict_ema") if ema and obj.get("state_dict_ema") else obj.get("state_dict")
    if not isinstance(state, dict):
        raise NeasError(f"{path}: 'state_dict' is not a mapping of tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise NeasError(f"{path}: entry {key!r} of the state_dict is not a tensor")
        out[key[len("module.") :] if key.startswith("module.") else key] = value
    return out


def load_official(
    path: str | Path, arch: str | EnsembleArch, num_classes: int | None = None, ema: bool = True
) -> EnsembleNet:
    """Builds the released ensemble ``arch`` in the imagenet space and loads the authors' checkpoint
    into it, without executing code from the file (see the module docstring). The unused
    ``conv_dwl``/``bn4`` tensors are ignored; any other missing or unexpected key, or a shape
    mismatch, is an error that lists them.

    Args:
        path: the released ``.pth.tar`` (``neas_s.pth.tar``, ...).
        arch: ``neas-s``, ``neas-m``, ``neas-l`` or an :class:`~neas.space.EnsembleArch`.
        num_classes: the classifiers' outputs; by default what the checkpoint's classifier holds
            (1000 for ImageNet).
        ema: load the EMA weights when the checkpoint has them (the reported ones).

    Returns:
        The :class:`~neas.ensemble.model.EnsembleNet` in eval mode; ``forward`` returns the mean of
        the paths' logits, like the authors' model.

    Example:
        >>> from neas import load_official
        >>> net = load_official("neas_m.pth.tar", "neas-m")  # doctest: +SKIP
        >>> net(images).argmax(1)  # images: (B, 3, 224, 224), ImageNet-normalised  # doctest: +SKIP
    """
    arch = EnsembleArch.resolve(arch)
    state = {k: v for k, v in read_official_state_dict(path, ema).items() if not k.endswith(IGNORED_SUFFIXES)}
    if num_classes is None:
        head = state.get("classifiers.0.weight")
        num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 1000
    net = build_ensemble(SearchSpace.preset("imagenet"), arch, num_classes)
    load_matching(net, state, f"{path}: the checkpoint does not fit {arch_name(arch)}", source="checkpoint")
    return net.eval()


def arch_name(arch: EnsembleArch) -> str:

    for name, flat in ARCH_PRESETS.items():
        if EnsembleArch.from_official(flat) == arch:
            return name.upper()
    return f"arch {arch}"
