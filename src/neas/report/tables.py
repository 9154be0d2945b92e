"""Markdown tables and the cells of seeded statistics: one owner for ``neas compare``, ``neas rank``,
``neas ablate`` and the CIFAR-10 study's tables (``experiments/cifar10``).

Plain Python, no torch. The numbers come from :mod:`neas.stats` (a row: mean, sd, t 95 % CI; a
paired difference: the same and its verdict); this module only lays them out, each metric as
:data:`METRICS` says (its label, the factor from the stored value, its decimal places).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from neas.stats import ci95

__all__ = [
    "CLIPPED",
    "METRICS",
    "Metric",
    "ci_cell",
    "clip_interval",
    "diff_cell",
    "difference_bounds",
    "interval_cell",
    "markdown_table",
    "stat_cell",
    "values_cell",
]


@dataclass(frozen=True)
class Metric:
    """How a metric is shown and read."""

    label: str  # the column's header, with its unit
    scale: float = 1.0  # stored value -> shown: 100 for a fraction in percent, 1e-6 for millions
    digits: int = 2  # decimal places
    higher_is_better: bool = True  # what "better" means in a paired difference (neas.stats.paired_difference)
    bounds: tuple[float | None, float | None] = (None, None)  # the stored value's range: an interval is clipped to it


FRACTION, NON_NEGATIVE = (0.0, 1.0), (0.0, None)
CLIPPED = "†"  # marks an interval end clipped at its quantity's bound (stat_cell)


# the metrics of eval.json (and ablate.json) as neas compare and the CIFAR-10 study show them
METRICS = {
    "top1": Metric("top-1 (%)", 100, 2, bounds=FRACTION),
    "nll": Metric("NLL", 1, 4, higher_is_better=False, bounds=NON_NEGATIVE),
    "ece": Metric("ECE (%)", 100, 2, higher_is_better=False, bounds=FRACTION),
    "disagreement": Metric("disagreement (%)", 100, 2, bounds=FRACTION),  # the diversity the paper's shrinking seeks
    "oracle_top1": Metric("oracle top-1 (%)", 100, 2, bounds=FRACTION),
    "macs": Metric("MACs (M)", 1e-6, 3, higher_is_better=False, bounds=NON_NEGATIVE),
    "mean_macs": Metric("mean MACs (M)", 1e-6, 3, higher_is_better=False, bounds=NON_NEGATIVE),  # per image
    "params": Metric("params (M)", 1e-6, 3, higher_is_better=False, bounds=NON_NEGATIVE),
    "latency_ms": Metric("latency (ms)", 1, 2, higher_is_better=False, bounds=NON_NEGATIVE),
}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a GitHub-flavoured Markdown table: the header, the separator, one line per row
    (cells are ``str()``-ed; a ``|`` inside a cell is escaped; an empty cell is ``| |``). Every row
    must have the header's width."""
    header = [str(cell) for cell in header]
    lines = [_line(header), "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"a table row has {len(cells)} cells, the header {len(header)}: {cells}")
        lines.append(_line(cells))
    return lines


def _line(cells: list[str]) -> str:
    return "|" + "".join(f" {_escape(cell)} |" if cell else " |" for cell in cells)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def clip_interval(lo: float, hi: float, bounds: tuple[float | None, float | None]) -> tuple[float, float, bool, bool]:
    """``[lo, hi]`` within ``bounds`` (low, high; None: unbounded), and whether each end was clipped. A
    quantity that cannot leave its bounds (a proportion, a cost) lies in the clipped interval whenever it
    lies in the unclipped one: clipping keeps the coverage and drops only impossible values."""
    low, high = bounds
    clip_lo, clip_hi = low is not None and lo < low, high is not None and hi > high
    return (low if clip_lo else lo), (high if clip_hi else hi), clip_lo, clip_hi


def stat_cell(
    stats: dict | None, scale: float = 1.0, digits: int = 2, bounds: tuple[float | None, float | None] = (None, None)
) -> str:
    """``mean ± sd [lo, hi]`` of a row's statistics (:func:`neas.stats.ci95` as a dict with ``mean``,
    ``sd``, ``lo``, ``hi``), scaled (100 for percent); ``mean (n=1)`` without a spread; ``-`` when absent.
    The interval is clipped to ``bounds`` (of the stored value), a clipped end marked :data:`CLIPPED`."""
    if stats is None:
        return "-"
    if stats.get("sd") is None:
        return f"{scale * stats['mean']:.{digits}f} (n=1)"
    lo, hi, clip_lo, clip_hi = clip_interval(stats["lo"], stats["hi"], bounds)
    mean, sd = scale * stats["mean"], scale * stats["sd"]
    ends = (f"{scale * lo:.{digits}f}" + CLIPPED * clip_lo, f"{scale * hi:.{digits}f}" + CLIPPED * clip_hi)
    return f"{mean:.{digits}f} ± {sd:.{digits}f} [{ends[0]}, {ends[1]}]"


def values_cell(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """:func:`stat_cell` of the statistics of ``values`` (:func:`neas.stats.ci95`); ``mean (n=N)``
    when they have no spread (one value, or a NaN among them)."""
    mean, sd, lo, hi = ci95(values)
    if math.isnan(sd):
        return f"{scale * mean:.{digits}f} (n={len(values)})"
    return stat_cell({"mean": mean, "sd": sd, "lo": lo, "hi": hi}, scale, digits)


def ci_cell(
    value: float, ci: Sequence[float], digits: int = 3, ci_digits: int | None = None, signed: bool = False
) -> str:
    """``value [lo, hi]``: an estimate and its 95 % interval (a rank correlation and its bootstrap CI,
    say), ``+``-signed for a difference; the interval to ``ci_digits`` places (default ``digits``)."""
    sign, places = "+" if signed else "", digits if ci_digits is None else ci_digits
    return f"{value:{sign}.{digits}f} [{ci[0]:{sign}.{places}f}, {ci[1]:{sign}.{places}f}]"


def difference_bounds(bounds: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """The range of a difference of two quantities within ``bounds``: [low - high, high - low] (a difference
    of proportions within [-1, 1]); unbounded when either bound is."""
    low, high = bounds
    return (None, None) if low is None or high is None else (low - high, high - low)


def interval_cell(
    diff: dict, scale: float = 1.0, digits: int = 2, bounds: tuple[float | None, float | None] = (None, None)
) -> str:
    """``+mean [lo, hi]`` of a difference (:func:`neas.stats.paired_difference`), signed; the mean
    alone when there is no interval (``lo`` None or NaN: below 2 pairs). The interval is clipped to
    ``bounds`` (of the stored difference), a clipped end marked :data:`CLIPPED`."""
    mean, lo, hi = scale * diff["mean"], diff.get("lo"), diff.get("hi")
    if lo is None or math.isnan(lo):
        return f"{mean:+.{digits}f}"
    lo, hi, clip_lo, clip_hi = clip_interval(lo, hi, bounds)
    return (
        f"{mean:+.{digits}f} [{scale * lo:+.{digits}f}{CLIPPED * clip_lo}, {scale * hi:+.{digits}f}{CLIPPED * clip_hi}]"
    )


def diff_cell(
    diff: dict, scale: float = 1.0, digits: int = 2, bounds: tuple[float | None, float | None] = (None, None)
) -> str:
    """``+mean [lo, hi] verdict`` of :func:`neas.stats.paired_difference` (no interval below 2 pairs), the
    interval within ``bounds``."""
    return f"{interval_cell(diff, scale, digits, bounds)} {diff['verdict']}"
