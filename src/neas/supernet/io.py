"""The supernet weights file, ``supernet.safetensors``: the weights, and in the safetensors
metadata everything a later stage needs to use them (typed here, JSON strings on disk).

Written by ``neas train-supernet``; read by ``neas search``, ``neas rank`` and ``neas ablate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from neas.errors import NeasError
from neas.io import load_matching, load_weights, loads_json, read_metadata, save_tensors
from neas.runfiles import SUPERNET, has_checkpoint
from neas.space import SearchSpace, ShrunkSpace
from neas.supernet.supernet import Supernet

__all__ = ["FORMAT", "SupernetFile", "load_supernet", "read_supernet_info", "save_supernet"]

FORMAT = "neas.supernet/1"


@dataclass(frozen=True)
class SupernetFile:
    """What a supernet file says about its weights."""

    space: SearchSpace
    shrunk: ShrunkSpace  # the space left after the last shrinking round
    classes: tuple[str, ...]
    data: str  # the dataset it was trained on, and how: later stages rebuild the same splits
    data_dir: str | None
    holdout: float  # the held-out fraction candidates are scored on
    shrink: str  # the shrinking mode it was trained with
    epoch: int  # the last epoch trained (0-based)
    config: dict  # the whole training configuration, for provenance

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "space": json.dumps(self.space.to_dict()),
            "shrunk": json.dumps(self.shrunk.to_json()),
            "num_classes": str(self.num_classes),
            "classes": json.dumps(list(self.classes)),
            "config": json.dumps(
                {
                    **self.config,
                    "data": self.data,
                    "data_dir": self.data_dir,
                    "holdout": self.holdout,
                    "shrink": self.shrink,
                }
            ),
            "epoch": str(self.epoch),
        }

    @staticmethod
    def from_metadata(meta: dict[str, str], where: str = "supernet file") -> SupernetFile:
        if meta.get("format") != FORMAT:
            raise NeasError(f"{where}: not a neas supernet file (format {meta.get('format')!r})")
        try:
            space = SearchSpace.from_dict(loads_json(meta["space"]))
            config = loads_json(meta["config"])
            return SupernetFile(
                space=space,
                shrunk=ShrunkSpace.from_json(space, loads_json(meta["shrunk"])),
                classes=tuple(loads_json(meta["classes"])),
                data=config["data"],
                data_dir=config.get("data_dir"),
                holdout=float(config["holdout"]),
                shrink=config.get("shrink", "diversity"),
                epoch=int(meta["epoch"]),
                config=config,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise NeasError(f"{where}: damaged supernet metadata ({exc!r})") from None


def _damaged(path: Path, exc: NeasError) -> NeasError:
    """``exc`` (a weights file that does not read back) with what to do when its run can rebuild it."""
    message = str(exc).replace("not a readable safetensors file", "not a readable supernet file")
    if has_checkpoint(path.parent):
        message += "; --resume its run (neas train-supernet, or neas run) to rebuild it from the last checkpoint"
    return NeasError(message)


def save_supernet(model: Supernet, info: SupernetFile, path: str | Path) -> None:
    """Writes ``model``'s weights with ``info`` (atomically)."""
    save_tensors(path, model.state_dict(), info.metadata())


def read_supernet_info(path: str | Path) -> SupernetFile:
    """What a supernet file (or run directory) says about its weights, without loading them."""
    path = Path(path)
    if path.is_dir():
        path = path / SUPERNET
    try:
        meta = read_metadata(path)
    except NeasError as exc:
        raise _damaged(path, exc) from None
    return SupernetFile.from_metadata(meta, str(path))


def load_supernet(path: str | Path, device="cpu") -> tuple[Supernet, SupernetFile]:
    """Loads ``supernet.safetensors`` (or the run directory holding it): the model and its file info."""
    path = Path(path)
    if path.is_dir():
        path = path / SUPERNET
    try:
        tensors, meta = load_weights(path)
    except NeasError as exc:
        raise _damaged(path, exc) from None
    info = SupernetFile.from_metadata(meta, str(path))
    model = load_matching(
        Supernet(info.space, info.num_classes), tensors, f"{path}: the weights do not fit the stored space"
    )
    return model.to(device), info
