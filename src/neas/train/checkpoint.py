"""Atomic, self-describing checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is one safetensors file holding the model (``model.<name>``) and the optimizer's
per-parameter state (``optim.<index>.<key>``), with the JSON state in its metadata too. The
run's ``state.json`` names the last complete checkpoint; every file is written to a temporary
name, flushed and renamed, and ``state.json`` is replaced last, so a run killed at any moment
resumes from a complete checkpoint. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from neas.errors import NeasError
from neas.io import MAX_JSON_BYTES, load_matching, load_weights, loads_json, save_tensors, write_json
from neas.runfiles import CHECKPOINTS, STATE

__all__ = ["load_checkpoint", "read_state", "save_checkpoint"]

log = logging.getLogger(__name__)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict,
    keep: int = 2,
    extra: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Writes ``<run>/checkpoints/<name>.safetensors`` then points ``<run>/state.json`` at it.

    ``extra`` modules (e.g. ``{"ema": ema_model}``) are stored under their prefix.
    """
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for prefix, module in (extra or {}).items():
        tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    optim_json = None
    if optimizer is not None:
        optim_tensors, optim_json = _optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
    state = {**state, "checkpoint": f"checkpoints/{name}.safetensors"}
    meta = {"state": json.dumps(state), "optimizer": json.dumps(optim_json)}
    save_tensors(folder / f"{name}.safetensors", tensors, meta)
    write_json(run_dir / STATE, state)
    old = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)[:-keep]
    for path in old:
        if path.name != f"{name}.safetensors":
            path.unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def _check_state(state, where: str) -> dict:
    """``state`` checked to be a state object: an integer ``epoch`` (training) or ``generation``
    and ``rng`` (search), and a ``checkpoint`` inside the run's checkpoint folder; errors name ``where``."""
    if not isinstance(state, dict):
        raise NeasError(f"{where}: corrupt state file (a JSON object expected, got {type(state).__name__})")
    counters = [k for k in ("epoch", "generation") if k in state]
    if not counters:
        raise NeasError(f"{where}: corrupt state file (no 'epoch' or 'generation')")
    for key in counters:
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            raise NeasError(f"{where}: corrupt state file (field {key!r} must be an integer >= 0, got {state[key]!r})")
    if "generation" in state and not (isinstance(state.get("rng"), list) and len(state["rng"]) == 3):
        raise NeasError(f"{where}: corrupt state file (field 'rng' must be a list of 3)")
    name = state.get("checkpoint", f"{CHECKPOINTS}/none.safetensors")  # a search's state names none
    if not isinstance(name, str) or Path(name).parent != Path(CHECKPOINTS) or not name.endswith(".safetensors"):
        raise NeasError(f"{where}: corrupt state file (field 'checkpoint' must name a file in {CHECKPOINTS}/)")
    return state


def read_state(run_dir: str | Path) -> dict:
    """The run's ``state.json``, checked (:func:`_check_state`); errors name the file and the field."""
    path = Path(run_dir) / STATE
    if not path.is_file():
        raise NeasError(f"{run_dir}: no checkpoint to resume from ({STATE} is missing)")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise NeasError(f"{path}: corrupt state file (too large)")
        state = loads_json(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NeasError(f"{path}: corrupt state file ({getattr(exc, 'msg', exc)})") from None
    return _check_state(state, str(path))


def _read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """A checkpoint file's tensors, metadata and state, verified (size, SHA-256, state fields)."""
    tensors, meta = load_weights(path)
    try:
        state = loads_json(meta.get("state", "null"))
    except ValueError:
        state = None
    return tensors, meta, _check_state(state, f"{path} (its state)")


def _candidates(run: Path) -> tuple[list[Path], dict | None]:
    """The checkpoints to try, best first: the one ``state.json`` names, then the kept ones, newest
    first; and ``state.json``'s state (None when it is damaged or missing)."""
    kept = sorted((run / CHECKPOINTS).glob("*.safetensors"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    try:
        state = read_state(run)
    except NeasError as exc:
        if kept:
            log.warning("%s; looking for the newest intact checkpoint", exc)
        return kept, None
    return list(dict.fromkeys([run / state["checkpoint"], *kept])), state


def _newest_intact(run: Path) -> tuple[Path, dict, dict, dict]:
    """The newest checkpoint of ``run`` that reads back intact (logging why newer ones were passed
    over), with its tensors, metadata and state; a :class:`NeasError` when there is none."""
    candidates, named = _candidates(run)
    if not candidates:
        read_state(run)  # raises the reason there is nothing to resume from
    problems = []
    for path in candidates:
        try:
            tensors, meta, state = _read_checkpoint(path)
        except NeasError as exc:
            problems.append(str(exc) if path.is_file() else f"{path}: missing")
            continue
        if not problems and named is not None:
            return path, tensors, meta, named  # the checkpoint state.json names: its state, as written
        if problems:
            log.warning(
                "%s; resuming from the newest intact checkpoint instead: %s (epoch %s)",
                "; ".join(problems),
                path,
                state.get("epoch", state.get("generation")) + 1,
            )
        return path, tensors, meta, state
    raise NeasError(f"unreadable checkpoint, and no intact older one to fall back on: {'; '.join(problems)}")


def load_checkpoint(
    run_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extra: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """Restores the model, optimizer (and ``extra`` modules) of the newest intact checkpoint (the
    one ``state.json`` names, or, when it or ``state.json`` is damaged or missing, the newest kept
    checkpoint that reads back intact, with a log line saying so); returns its state."""
    path, tensors, meta, state = _newest_intact(Path(run_dir))
    for prefix, module in {"model": model, **(extra or {})}.items():
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        load_matching(module, part, f"{path}: the checkpoint's {prefix} weights do not fit this run's {prefix}")
    if optimizer is not None and meta.get("optimizer") not in (None, "null"):
        optim_json = json.loads(meta["optimizer"])
        per_param: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        for index, scalars in optim_json["scalars"].items():
            per_param.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": per_param, "param_groups": optim_json["param_groups"]})
    return state
