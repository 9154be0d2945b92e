"""Ensemble architectures: K paths plus a split point (docs/DESIGN.md §3).

``EnsembleArch(split, paths)`` holds one op per searchable layer for each path. Layers
L1..L{split} are shared (all paths agree there); on every later layer the K paths use K
distinct ops, so a supernet with one module per (layer, op) never uses a weight twice in a
step (``distinct=False`` lifts that rule for the ablations' ensembles outside the search space:
mirrored paths, no sharing). Construction checks these structural rules; :meth:`EnsembleArch.validate` adds the
rules of a particular (optionally shrunk) space.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from neas.errors import NeasError, suggest
from neas.io import loads_json, write_json
from neas.space.ops import Op, op_from_official, op_to_official, parse_op
from neas.space.presets import ARCH_PRESETS
from neas.space.shrunk import ShrunkSpace
from neas.space.space import SearchSpace

__all__ = ["EnsembleArch", "arch_file_record", "resolve_arch_and_space"]


def _randbelow(gen: random.Random, n: int) -> int:
    return gen.randrange(n)


def _permutation(gen: random.Random, n: int) -> list[int]:
    order = list(range(n))
    gen.shuffle(order)
    return order


def as_generator(gen) -> random.Random:
    """Accepts a ``random.Random``, a seed, or ``None`` (fresh entropy)."""
    if gen is None or isinstance(gen, int):
        return random.Random(gen)
    if isinstance(gen, random.Random):
        return gen
    raise TypeError(f"expected random.Random, int or None, got {type(gen).__name__}")


@dataclass(frozen=True)
class EnsembleArch:
    """An ensemble of K paths sharing layers L1..L{split}: what a search finds and a retraining trains.

    Args:
        split: the split point s; layers L0..Ls are computed once and shared.
        paths: K tuples with one :class:`Op` per searchable layer (index i is layer L{i+1}).
        distinct: the paths use K distinct ops on every private layer (the search space's rule);
            ``False`` allows repeats — homogeneous (mirrored) ensembles and unshared copies,
            which can be built and retrained but are never searched.

    Build one from ops (as below), :meth:`preset` (``neas-s``, ``neas-m``, ``neas-l``), :meth:`load`
    (a search's ``arch.json``), :meth:`from_official` (the authors' flat ``arch_list``) or
    :meth:`sample`; :meth:`validate` checks it against a space.

    Example:
        >>> from neas import EnsembleArch, SearchSpace
        >>> arch = EnsembleArch(2, (("k3e3", "k5e6", "k3e6", "k5e3"), ("k3e3", "k5e6", "k5e3", "k3e6")))
        >>> print(arch)
        split=2 shared=[k3e3 k5e6] paths=[k3e6 k5e3 | k5e3 k3e6]
        >>> arch.validate(SearchSpace.preset("tiny")) == arch
        True
        >>> EnsembleArch.from_json(arch.to_json()) == arch, EnsembleArch.preset("neas-s").num_paths
        (True, 2)
    """

    split: int
    paths: tuple[tuple[Op, ...], ...]
    distinct: bool = True

    def __post_init__(self):
        if isinstance(self.split, bool) or not isinstance(self.split, int):
            raise NeasError(f"arch: split must be an integer, got {self.split!r}")
        if not isinstance(self.paths, (list, tuple)) or len(self.paths) < 1:
            raise NeasError("arch: needs at least 1 path (1: a single network)")
        paths = []
        for k, path in enumerate(self.paths):
            if isinstance(path, str) or not isinstance(path, (list, tuple)):
                raise NeasError(f"arch: path {k} must be a list of ops, got {path!r}")
            paths.append(tuple(parse_op(o) for o in path))
        object.__setattr__(self, "paths", tuple(paths))
        n = len(paths[0])
        for k, path in enumerate(paths):
            if len(path) != n:
                raise NeasError(f"arch: path {k} has {len(path)} layers but path 0 has {n}")
        if not 0 <= self.split <= n:
            raise NeasError(f"arch: split {self.split} is outside 0..{n} (the number of layers)")
        if not isinstance(self.distinct, bool):
            raise NeasError(f"arch: distinct must be true or false, got {self.distinct!r}")
        for i in range(n):
            column = [path[i] for path in paths]
            if i < self.split and len(set(column)) != 1:
                raise NeasError(
                    f"arch: layer L{i + 1} is shared (split={self.split}) but the paths differ there: "
                    f"{'/'.join(map(str, column))}"
                )
            if self.distinct and i >= self.split and len(set(column)) != len(column):
                raise NeasError(
                    f"arch: layer L{i + 1} is private (split={self.split}) but repeats an op across paths: "
                    f"{'/'.join(map(str, column))}; the K paths must use K distinct ops there"
                )

    # ---- views --------------------------------------------------------------------------------
    @property
    def num_paths(self) -> int:
        return len(self.paths)

    @property
    def num_layers(self) -> int:
        return len(self.paths[0])

    @property
    def shared(self) -> tuple[Op, ...]:
        """Ops of the shared layers L1..L{split}."""
        return self.paths[0][: self.split]

    def private(self, k: int) -> tuple[Op, ...]:
        """Ops of path ``k`` on layers L{split+1}..Ln."""
        return self.paths[k][self.split :]

    def combination(self, index: int) -> tuple[Op, ...]:
        """The ops used at layer ``L{index}`` by the K paths (one op if shared)."""
        column = tuple(path[index - 1] for path in self.paths)
        return column[:1] if index <= self.split else column

    def __str__(self) -> str:
        shared = " ".join(map(str, self.shared)) or "-"
        paths = " | ".join(" ".join(map(str, self.private(k))) or "-" for k in range(self.num_paths))
        return f"split={self.split} shared=[{shared}] paths=[{paths}]" + ("" if self.distinct else " (repeats allowed)")

    # ---- space rules ----------------------------------------------------------------------------
    def validate(self, space: SearchSpace, shrunk: ShrunkSpace | None = None) -> EnsembleArch:
        """Checks the arch against ``space`` (and ``shrunk``); returns it, or raises naming the layer."""
        where = f"space {space.name!r}"
        if self.num_paths != space.num_paths:
            raise NeasError(f"arch has {self.num_paths} paths but {where} has num_paths={space.num_paths}")
        if self.num_layers != space.num_layers:
            raise NeasError(
                f"arch has {self.num_layers} layers per path but {where} has {space.num_layers} searchable layers"
            )
        lo, hi = space.split
        if not lo <= self.split <= hi:
            raise NeasError(f"arch: split {self.split} is outside the split range [{lo}, {hi}] of {where}")
        for spec in space.layers:
            for k, path in enumerate(self.paths):
                op = path[spec.index - 1]
                if op.is_skip and spec.first_of_stage:
                    raise NeasError(
                        f"arch: layer {spec.name} (path {k}): skip is not allowed on the first layer of a stage"
                    )
                if op not in spec.ops:
                    raise NeasError(
                        f"arch: layer {spec.name} (path {k}): op {op} is not a candidate of {where}"
                        f"{suggest(op, spec.ops)}; candidates: {', '.join(map(str, spec.ops))}"
                    )
            if shrunk is not None:
                self._validate_shrunk(spec, shrunk)
        return self

    def _validate_shrunk(self, spec, shrunk: ShrunkSpace) -> None:
        """The layer ``spec`` of this arch is one the shrunk space still holds."""
        ops = self.combination(spec.index)
        if spec.index > self.split and len(set(ops)) != len(ops):
            raise NeasError(
                f"arch: layer {spec.name} repeats {'/'.join(map(str, ops))} across paths, which no shrunk space holds"
            )
        if spec.index <= self.split:
            if ops[0] not in shrunk.shared_ops(spec.index):
                raise NeasError(f"arch: shared layer {spec.name} uses {ops[0]}, which the shrunk space removed")
        elif shrunk.canonical(ops) not in shrunk.layer_combinations(spec.index):
            raise NeasError(
                f"arch: layer {spec.name} uses the combination {'/'.join(map(str, ops))}, which the shrunk "
                "space removed"
            )

    def is_valid(self, space: SearchSpace, shrunk: ShrunkSpace | None = None) -> bool:
        try:
            self.validate(space, shrunk)
        except NeasError:
            return False
        return True

    # ---- sampling ----------------------------------------------------------------------------------
    @staticmethod
    def sample(
        space: SearchSpace,
        generator=None,
        shrunk: ShrunkSpace | None = None,
        split: int | None = None,
    ) -> EnsembleArch:
        """Samples uniformly: the split point, an allowed op per shared layer, and per private
        layer a surviving combination assigned to the paths in random order (docs/DESIGN.md §4)."""
        gen = as_generator(generator)
        shrunk = shrunk or ShrunkSpace.full(space)
        points = list(space.split_points)
        s = points[_randbelow(gen, len(points))] if split is None else split
        if s not in points:
            raise NeasError(f"split {s} is outside the split range {list(space.split)} of space {space.name!r}")
        columns = []
        for spec in space.layers:
            if spec.index <= s:
                ops = shrunk.shared_ops(spec.index)
                columns.append((ops[_randbelow(gen, len(ops))],) * space.num_paths)
            else:
                combos = shrunk.layer_combinations(spec.index)
                combo = combos[_randbelow(gen, len(combos))]
                columns.append(tuple(combo[i] for i in _permutation(gen, len(combo))))
        return EnsembleArch(s, tuple(zip(*columns)))

    # ---- formats -------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        out = {"split": self.split, "paths": [[str(o) for o in path] for path in self.paths]}
        return out if self.distinct else {**out, "distinct": False}

    @staticmethod
    def from_json(data: dict | str) -> EnsembleArch:
        if isinstance(data, str):
            try:
                data = loads_json(data)
            except json.JSONDecodeError as exc:
                raise NeasError(f"malformed arch JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
            except ValueError as exc:  # nested too deeply, an integer of thousands of digits
                raise NeasError(f"malformed arch JSON: {exc}") from None
        if not isinstance(data, dict) or "split" not in data or "paths" not in data:
            raise NeasError("arch JSON must be an object with the keys 'split' and 'paths'")
        arch = EnsembleArch(data["split"], data["paths"], data.get("distinct", True))
        _check_path_acc(data.get("path_acc"), arch.num_paths)
        return arch

    def save(self, path: str | Path, **extra) -> None:
        write_json(path, {**self.to_json(), **extra}, indent=2)

    @staticmethod
    def load(path: str | Path) -> EnsembleArch:
        path = Path(path)
        if not path.is_file():
            raise NeasError(f"{path}: no such arch file")
        try:
            return EnsembleArch.from_json(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise NeasError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
        except NeasError as exc:
            raise NeasError(f"{path}: {exc}") from None

    @staticmethod
    def preset(name: str) -> EnsembleArch:
        """The released models: ``neas-s``, ``neas-m``, ``neas-l`` (imagenet space)."""

        key = name.lower()
        if key not in ARCH_PRESETS:
            raise NeasError(
                f"unknown arch preset {name!r}{suggest(key, ARCH_PRESETS)}; presets: {', '.join(ARCH_PRESETS)}"
            )
        return EnsembleArch.from_official(ARCH_PRESETS[key])

    @staticmethod
    def resolve(spec: str | Path | EnsembleArch) -> EnsembleArch:
        """A preset name, or a JSON file (``arch.json`` of a search), or an arch."""
        if isinstance(spec, EnsembleArch):
            return spec
        text = str(spec)

        if text.lower() in ARCH_PRESETS:
            return EnsembleArch.preset(text)
        if text.endswith(".json") or Path(text).exists():
            return EnsembleArch.load(text)
        return EnsembleArch.preset(text)

    def to_official(self) -> list[int]:
        """The official flat list ``[s, K, 0, <L1..Ls>, (<L(s+1)..Ln>, 0) * K]``."""
        flat = [self.split, self.num_paths, 0, *(op_to_official(o) for o in self.shared)]
        for k in range(self.num_paths):
            flat += [*(op_to_official(o) for o in self.private(k)), 0]
        return flat

    @staticmethod
    def from_official(arch_list) -> EnsembleArch:
        """Parses the official flat ``arch_list`` (see :meth:`to_official`)."""
        items = list(arch_list)
        if len(items) < 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise NeasError(f"official arch_list must be a list of integers [s, K, ...], got {arch_list!r}")
        s, k = items[0], items[1]
        if k < 2 or s < 0:
            raise NeasError(f"official arch_list: split {s} and K={k} must satisfy split >= 0 and K >= 2")
        rest = len(items) - 3 - s  # K * (n - s + 1)
        if rest < k or rest % k:
            raise NeasError(
                f"official arch_list of length {len(items)} does not fit split={s}, K={k}: expected "
                f"3 + s + K * (n - s + 1) entries for some number of layers n >= s"
            )
        private = rest // k - 1
        shared = [op_from_official(v) for v in items[3 : 3 + s]]
        paths = []
        for j in range(k):
            start = 3 + s + j * (private + 1)
            paths.append(shared + [op_from_official(v) for v in items[start : start + private]])
        return EnsembleArch(s, tuple(tuple(p) for p in paths))


def arch_file_record(arch_spec: str | Path) -> dict:
    """The JSON object of an arch file (a search's ``arch.json``: costs, scores, ``num_classes``,
    ``space``); ``{}`` for a preset name or an arch given as an object."""
    if not isinstance(arch_spec, (str, Path)):
        return {}
    path = Path(arch_spec)
    if str(arch_spec).lower() in ARCH_PRESETS or not (str(arch_spec).endswith(".json") or path.exists()):
        return {}
    EnsembleArch.load(path)  # a missing, non-UTF-8 or malformed file is refused here, naming it
    return json.loads(path.read_text(encoding="utf-8"))


def _stored_space(stored, arch_file: Path) -> SearchSpace:
    """An arch file's ``"space"``: an inline mapping, a preset name, or a ``.yaml``/``.yml`` file
    relative to the arch file's folder. A space file's own errors are not echoed: the arch file may
    name any file, and its keys are none of the message's business."""
    where = f"{arch_file}: field 'space'"
    if isinstance(stored, dict):
        try:
            return SearchSpace.from_dict(stored)
        except NeasError as exc:
            raise NeasError(f"{where}: {exc}") from None
    if not isinstance(stored, str) or not stored:
        raise NeasError(f"{where} must be a preset name, a mapping or a .yaml file, got {type(stored).__name__}")
    if not stored.endswith((".yaml", ".yml")):
        return SearchSpace.preset(stored)
    path = Path(stored).expanduser()
    path = path if path.is_absolute() else arch_file.parent / path
    if not path.is_file():
        raise NeasError(f"{where}: no space file {path}")
    try:
        return SearchSpace.from_yaml(path)
    except NeasError:
        raise NeasError(f"{where}: {path} is not a search space YAML file") from None


def _check_path_acc(acc, num_paths: int) -> None:
    """A search's ``path_acc`` (one held-out top-1 per path), when the file has one."""
    if acc is None:
        return
    numbers = isinstance(acc, list) and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in acc
    )
    if not numbers or len(acc) != num_paths:
        raise NeasError(
            f"field 'path_acc' must be a list of {num_paths} accuracies in [0, 1] (one per path), got {acc!r:.80}"
        )


def resolve_arch_and_space(arch_spec: str, space_spec: str | None = None) -> tuple[EnsembleArch, SearchSpace]:
    """An arch (``neas-s/m/l`` or a JSON file) and its space: ``space_spec`` if given, else the
    space stored in the arch file (a search's ``arch.json``), else the imagenet space; validated."""
    arch = EnsembleArch.resolve(arch_spec)  # a file that is not UTF-8 JSON is refused here
    stored = arch_file_record(arch_spec).get("space")
    if space_spec is not None:
        space = SearchSpace.resolve(space_spec)
    elif stored is not None:
        space = _stored_space(stored, Path(arch_spec))
    else:
        space = SearchSpace.preset("imagenet")
    arch.validate(space)
    return arch, space
