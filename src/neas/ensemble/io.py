"""The ensemble weights file: safetensors with the arch, space and classes in its metadata."""

from __future__ import annotations

import json
from pathlib import Path

from neas.ensemble.model import EnsembleNet, build_ensemble
from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace
from neas.io import load_matching, load_weights, save_tensors
from neas.rundir import MODEL

__all__ = ["save_ensemble", "load_ensemble", "load_model", "store_metadata", "FORMAT"]

FORMAT = "neas.ensemble/1"


def _as_metadata(meta: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def save_ensemble(net: EnsembleNet, path: "str | Path", **meta) -> None:
    """Writes ``net``'s state_dict (released key layout) and what is needed to rebuild it."""
    metadata = {"format": FORMAT, "arch": json.dumps(net.arch.to_json()), "space": json.dumps(net.space.to_dict()),
                "num_classes": str(net.num_classes), **_as_metadata(meta)}
    save_tensors(path, net.state_dict(), metadata)


def _read(path: "str | Path") -> tuple[Path, dict, dict]:
    """A neas weights file (or a run directory's ``model.safetensors``): its path, tensors and metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    tensors, meta = load_weights(path)
    if meta.get("format") != FORMAT:
        raise NeasError(f"{path}: not a neas ensemble file (format {meta.get('format')!r}); released .pth.tar files load with --official-checkpoint")
    return path, tensors, meta


def load_ensemble(path: "str | Path", device="cpu") -> tuple[EnsembleNet, dict]:
    """Rebuilds the ensemble of a weights file (or of a run directory's ``model.safetensors``)."""
    path, tensors, meta = _read(path)
    space = SearchSpace.from_dict(json.loads(meta["space"]))
    arch = EnsembleArch.from_json(meta["arch"])
    net = build_ensemble(space, arch, int(meta["num_classes"]))
    load_matching(net, tensors, f"{path}: the weights do not fit the stored arch")
    return net.to(device).eval(), meta


def store_metadata(path: "str | Path", **meta) -> Path:
    """Adds ``meta`` to a neas weights file's metadata (atomically; the weights are unchanged)."""
    path, tensors, old = _read(path)
    save_tensors(path, tensors, {**old, **_as_metadata(meta)})
    return path


def load_model(checkpoint: "str | None", official_checkpoint: "str | None", arch: "str | None"):
    """The ensemble of a neas weights file, or of a released checkpoint (with ``arch``), and its metadata."""
    if (checkpoint is None) == (official_checkpoint is None):
        raise NeasError("give exactly one of --checkpoint (a neas weights file) or --official-checkpoint (a released .pth.tar)")
    if official_checkpoint is not None:
        from neas.ensemble.official import load_official

        if arch is None:
            raise NeasError("--official-checkpoint needs --arch (neas-s, neas-m or neas-l)")
        return load_official(official_checkpoint, arch), {"weights": "official"}
    return load_ensemble(checkpoint)
