"""The records a run writes, typed: ``eval.json``, ``arch.json``, ``summary.json`` and the fitted cascade.

Each record is a small frozen dataclass read once, at the file boundary, with every field a reader
relies on checked there (a wrong type or an out-of-range number is one ``NeasError`` naming the file
and the field); the rest of the file is kept as written in ``raw``, so a record never loses what a
newer writer added. Like :class:`neas.ensemble.io.EnsembleFile`, each has ``to_json``. Torch-free.

- :class:`EvalRecord`: an evaluation (``neas retrain``/``neas evaluate``): the ensemble's and each
  path's scores, the costs, and the cascade's report when there is one;
- :class:`ArchRecord`: a search's result (or a budget's pick): the ensemble, its costs and its
  one-shot score (``supernet_acc``: the supernet's held-out top-1 of the ensemble);
- :class:`Summary`: ``neas run``'s result;
- :class:`CascadeRecord`: a fitted cascade (order, thresholds, how it was fitted), as the ensemble's
  weights file and the ONNX cascade's spec store it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neas.errors import NeasError
from neas.io import read_json
from neas.runfiles import generation_file

__all__ = [
    "CASCADE_EXITS",
    "COSTS",
    "TEMPERATURE_RANGE",
    "ArchRecord",
    "CascadeRecord",
    "EvalRecord",
    "Summary",
    "check_exit",
    "check_order",
    "check_temperature",
    "path_name",
    "predictor_names",
    "read_arch",
    "read_eval",
    "read_generations",
    "read_summary",
]

COSTS = ("macs", "paper_flops", "params")  # an ensemble's static costs, as every record stores them
# a stored temperature, wherever it is read (model file, cascade record, cascade.json): fit_temperature
# searches [0.05, 20]; outside [1e-3, 1e3] a temperature is an edit (1e-300 gives NLL nan, 1e300 uniform
# probabilities), not a fit
TEMPERATURE_RANGE = (1e-3, 1e3)
# how a cascade's thresholds were chosen (neas.ensemble.cascade.fit_thresholds): keep top-1, or keep the
# coverage at 5 % selective risk, within the tolerance of the full ensemble's; provenance, not inference
CASCADE_EXITS = ("accuracy", "risk")


def path_name(j: int) -> str:
    """The key of path ``j``'s scores in ``eval.json`` (0-based)."""
    return f"path{j}"


def predictor_names(k: int) -> list[str]:
    """The predictors an evaluation scores: the ensemble, then each of the ``k`` paths."""
    return ["ensemble", *(path_name(j) for j in range(k))]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(record: dict, key: str, where: str, low: float | None = None, high: float | None = None):
    """``record[key]``: a finite number within [low, high]; None when absent or null."""
    value = record.get(key)
    if value is None:
        return None
    if not _is_number(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in [{low:g}, {high:g}]" if high is not None else (f" >= {low:g}" if low is not None else "")
        raise NeasError(f"{where}: field {key!r} must be a finite number{bounds}, got {value!r:.80}")
    return value


def check_temperature(value, where: str, nullable: bool = False) -> float | None:
    """A stored temperature: a finite number (not a bool) in :data:`TEMPERATURE_RANGE` (or None when
    ``nullable``); ``where`` names the file and field."""
    if value is None and nullable:
        return None
    low, high = TEMPERATURE_RANGE
    if not (_is_number(value) and low <= value <= high):
        null = " or null" if nullable else ""
        raise NeasError(f"{where} must be a finite number in [{low:g}, {high:g}]{null}, got {value!r:.80}")
    return float(value)


def check_exit(value, where: str) -> str:
    """A stored exit rule: one of :data:`CASCADE_EXITS`; absent (None) in a record written before there
    were two, which was fitted for top-1."""
    if value is None:
        return CASCADE_EXITS[0]
    if value not in CASCADE_EXITS:
        raise NeasError(f"{where} must be one of {', '.join(CASCADE_EXITS)}, got {value!r:.80}")
    return value


def check_order(order, k: int, where: str) -> tuple[int, ...]:
    """An order of the ``k`` paths: a list of the integers 0..k-1 (not bools), each once."""
    if (
        not isinstance(order, (list, tuple))
        or not all(isinstance(j, int) and not isinstance(j, bool) for j in order)
        or sorted(order) != list(range(k))
    ):
        raise NeasError(f"{where} must order the paths 0..{k - 1}, got {order!r:.80}")
    return tuple(order)


def _costs(record: dict, where: str) -> dict:
    return {key: _number(record, key, where, 0) for key in COSTS}


@dataclass(frozen=True)
class CascadeRecord:
    """A fitted cascade: run the paths in ``order``; after step j (1-based, j < K) stop when the
    ensemble-so-far's confidence reaches ``thresholds[j - 1]``. ``temperature`` scales the stopping
    confidence (None: raw softmax); ``tolerance`` is the fit's tolerance in points, of top-1 or of the
    coverage at 5 % selective risk as ``exit_rule`` (JSON ``exit``, one of :data:`CASCADE_EXITS`) says."""

    order: tuple[int, ...]
    thresholds: tuple[float, ...]
    tolerance: float | None = None
    temperature: float | None = None
    fitted_on: str | None = None
    images: int | None = None
    exit_rule: str = CASCADE_EXITS[0]

    @classmethod
    def from_json(cls, record, k: int, where: str = "cascade") -> CascadeRecord:
        """Checks a stored cascade of a ``k``-path ensemble: a permutation of the paths, K - 1 finite
        thresholds, a temperature that is null or a finite number in :data:`TEMPERATURE_RANGE`, an exit
        rule of :data:`CASCADE_EXITS` (absent: accuracy)."""
        if not isinstance(record, dict):
            raise NeasError(f"{where}: must be a JSON object, got {type(record).__name__}")
        order = check_order(record.get("order"), k, f"{where}: 'order'")
        thresholds = record.get("thresholds")
        if not (isinstance(thresholds, list) and len(thresholds) == k - 1 and all(map(_is_number, thresholds))):
            raise NeasError(f"{where}: 'thresholds' must be {k - 1} finite numbers, got {thresholds!r:.80}")
        t = check_temperature(record.get("temperature"), f"{where}: 'temperature'", nullable=True)
        images = record.get("images")
        if images is not None and not (isinstance(images, int) and not isinstance(images, bool) and images > 0):
            raise NeasError(f"{where}: 'images' must be a positive integer or null, got {images!r:.80}")
        fitted_on = record.get("fitted_on")
        return cls(
            order=order,
            thresholds=tuple(float(x) for x in thresholds),
            tolerance=_number(record, "tolerance", where, 0),
            temperature=t,
            fitted_on=None if fitted_on is None else str(fitted_on),
            images=images,
            exit_rule=check_exit(record.get("exit"), f"{where}: 'exit'"),
        )

    def to_json(self) -> dict:
        out = {
            "order": list(self.order),
            "thresholds": list(self.thresholds),
            "tolerance": self.tolerance,
            "exit": self.exit_rule,
            "temperature": self.temperature,
            "fitted_on": self.fitted_on,
        }
        if self.images is not None:
            out["images"] = self.images
        return out

    def fitted(self) -> dict:
        """How the cascade was fitted, as both cascade exports record it (the single file's ``cascade_fitted``,
        ``cascade.json``'s ``fitted``): ``tolerance``, the exit rule ``exit``, ``fitted_on``, ``images`` (those set)."""
        keys = ("tolerance", "exit", "fitted_on", "images")
        return {key: value for key, value in self.to_json().items() if key in keys and value is not None}


@dataclass(frozen=True)
class EvalRecord:
    """``eval.json`` of an ensemble: ``ensemble`` and ``paths[j]`` are the predictors' score blocks
    (``top1`` checked, in [0, 1]), ``costs`` the whole ensemble's static costs, ``raw`` the file."""

    ensemble: dict
    paths: tuple[dict, ...]
    costs: dict
    raw: dict = field(repr=False)

    @property
    def top1(self) -> float:
        return self.ensemble["top1"]

    @property
    def path_top1(self) -> list[float]:
        return [p["top1"] for p in self.paths]

    def get(self, key: str, default=None):
        """Any other field of the file, as written."""
        return self.raw.get(key, default)

    @classmethod
    def from_json(cls, record: dict, where: str) -> EvalRecord:
        blocks, names = [], ["ensemble"]
        while path_name(len(names) - 1) in record:
            names.append(path_name(len(names) - 1))
        for name in names:
            block = record[name]
            if not isinstance(block, dict) or block.get("top1") is None:
                raise NeasError(f"{where}: evaluation field {name!r} must be an object holding a number 'top1'")
            _number(block, "top1", f"{where}: {name}", 0, 1)
            blocks.append(block)
        return cls(ensemble=blocks[0], paths=tuple(blocks[1:]), costs=_costs(record, where), raw=record)

    def to_json(self) -> dict:
        return self.raw


@dataclass(frozen=True)
class ArchRecord:
    """``arch.json``: the ensemble (``split``, ``paths``: each path's op names after the split), its
    static ``costs`` and its one-shot score ``supernet_acc``; ``raw`` the file (candidates, space, ...)."""

    split: int
    paths: tuple[tuple[str, ...], ...]
    costs: dict
    supernet_acc: float | None
    raw: dict = field(repr=False)

    @property
    def arch(self) -> dict:
        """The ensemble as ``EnsembleArch.from_json`` reads it."""
        return {"split": self.split, "paths": [list(p) for p in self.paths]}

    def get(self, key: str, default=None):
        return self.raw.get(key, default)

    @classmethod
    def from_json(cls, record: dict, where: str) -> ArchRecord:
        split, paths = record.get("split"), record.get("paths")
        if not isinstance(split, int) or isinstance(split, bool) or split < 0:
            raise NeasError(f"{where}: field 'split' must be an integer >= 0, got {split!r:.80}")
        if not (
            isinstance(paths, list)
            and paths
            and all(isinstance(p, list) and all(isinstance(op, str) for op in p) for p in paths)
        ):
            raise NeasError(f"{where}: field 'paths' must be a non-empty list of lists of op names, got {paths!r:.80}")
        return cls(
            split=split,
            paths=tuple(tuple(p) for p in paths),
            costs=_costs(record, where),
            supernet_acc=_number(record, "supernet_acc", where, 0, 1),
            raw=record,
        )

    def to_json(self) -> dict:
        return self.raw


@dataclass(frozen=True)
class Summary:
    """``summary.json`` of ``neas run``: the test scores of the retrained ensemble, its one-shot score,
    costs and budget constraints, and with ``budgets:`` one record per budget."""

    report: str
    test_top1: float
    test_nll: float | None
    test_ece: float | None
    path_test_top1: list[float]
    supernet_acc: float | None
    costs: dict
    constraints: dict
    arch: dict
    budgets: list[dict] | None = None
    mean_macs: float | None = None  # the retrained cascade's measured mean MACs per image on the test split

    @classmethod
    def of(cls, report: Path, arch: ArchRecord, result: EvalRecord, budgets: list | None, constraints: dict) -> Summary:
        """The summary of a run whose chosen ensemble is ``arch``, retrained and evaluated as ``result``,
        searched within ``constraints``."""
        return cls(
            report=str(report),
            test_top1=result.top1,
            test_nll=result.ensemble.get("nll"),
            test_ece=result.ensemble.get("ece"),
            path_test_top1=result.path_top1[: len(arch.paths)],
            supernet_acc=arch.supernet_acc,
            costs=arch.costs,
            constraints=constraints,
            arch=arch.arch,
            budgets=budgets or None,
            mean_macs=(result.get("cascade") or {}).get("mean_macs"),
        )

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "report": self.report,
            "test_top1": self.test_top1,
            "test_nll": self.test_nll,
            "test_ece": self.test_ece,
            "path_test_top1": self.path_test_top1,
            "supernet_acc": self.supernet_acc,
            **self.costs,
            **({"mean_macs": self.mean_macs} if self.mean_macs is not None else {}),
            "constraints": self.constraints,
            "arch": self.arch,
        }
        if self.budgets:
            out["budgets"] = self.budgets
        return out

    @classmethod
    def from_json(cls, record: dict, where: str) -> Summary:
        top1 = _number(record, "test_top1", where, 0, 1)
        if top1 is None:
            raise NeasError(f"{where}: field 'test_top1' must be a number in [0, 1]")
        path_top1 = record.get("path_test_top1", [])
        if not isinstance(path_top1, list) or not all(_is_number(a) and 0 <= a <= 1 for a in path_top1):
            raise NeasError(f"{where}: field 'path_test_top1' must be a list of numbers in [0, 1]")
        arch = ArchRecord.from_json(record.get("arch") if isinstance(record.get("arch"), dict) else {}, where)
        budgets = record.get("budgets")
        if budgets is not None and not (isinstance(budgets, list) and all(isinstance(b, dict) for b in budgets)):
            raise NeasError(f"{where}: field 'budgets' must be a list of objects")
        constraints = record.get("constraints") or {}
        if not isinstance(constraints, dict):
            raise NeasError(f"{where}: field 'constraints' must be an object")
        return cls(
            report=str(record.get("report", "")),
            test_top1=top1,
            test_nll=_number(record, "test_nll", where, 0),
            test_ece=_number(record, "test_ece", where, 0, 1),
            path_test_top1=path_top1,
            supernet_acc=_number(record, "supernet_acc", where, 0, 1),
            costs=_costs(record, where),
            constraints=constraints,
            arch=arch.arch,
            budgets=budgets,
            mean_macs=_number(record, "mean_macs", where, 0),
        )


def read_eval(path: str | Path) -> EvalRecord:
    """A retraining's (or an evaluation's) ``eval.json``."""
    return EvalRecord.from_json(read_json(path, "evaluation", ("ensemble",)), str(path))


def read_arch(path: str | Path) -> ArchRecord:
    """A search's (or a budget's) ``arch.json``."""
    return ArchRecord.from_json(read_json(path, "arch file", ("split", "paths")), str(path))


def read_summary(path: str | Path) -> Summary:
    """``neas run``'s ``summary.json``."""
    return Summary.from_json(read_json(path, "pipeline summary", ("test_top1",)), str(path))


def read_generations(search_dir: str | Path, count: int | None = None) -> list[dict]:
    """A search's ``generation_XX.json`` files in order (the first ``count``, else all there are),
    each with its ``members`` list."""
    search_dir = Path(search_dir)
    if count is None:
        count = len(list(search_dir.glob(generation_file(0).replace("00", "*"))))
    records = [read_json(search_dir / generation_file(g), "search generation", ("members",)) for g in range(count)]
    for g, record in enumerate(records):
        if not isinstance(record["members"], list):
            raise NeasError(f"{search_dir / generation_file(g)}: field 'members' must be a list")
    return records
