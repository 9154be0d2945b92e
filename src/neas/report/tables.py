"""Markdown tables and the cells of seeded statistics: one owner for ``neas compare``, ``neas rank``,
``neas ablate`` and the CIFAR-10 study's tables (``experiments/cifar10``).

Plain Python, no torch. The numbers come from :mod:`neas.stats` (a row: mean, sd, t 95 % CI; a
paired difference: the same and its verdict); this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["diff_cell", "markdown_table", "stat_cell"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a GitHub-flavoured Markdown table: the header, the separator, one line per row
    (cells are ``str()``-ed; a ``|`` inside a cell is escaped). Every row must have the header's width."""
    header = [str(cell) for cell in header]
    lines = [_line(header), "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"a table row has {len(cells)} cells, the header {len(header)}: {cells}")
        lines.append(_line(cells))
    return lines


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def stat_cell(stats: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd [lo, hi]`` of a row's statistics (:func:`neas.stats.ci95` as a dict with ``mean``,
    ``sd``, ``lo``, ``hi``), scaled (100 for percent); ``mean (n=1)`` without a spread; ``-`` when absent."""
    if stats is None:
        return "-"
    if stats.get("sd") is None:
        return f"{scale * stats['mean']:.{digits}f} (n=1)"
    mean, sd, lo, hi = (scale * stats[k] for k in ("mean", "sd", "lo", "hi"))
    return f"{mean:.{digits}f} ± {sd:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def diff_cell(diff: dict, scale: float = 1.0, digits: int = 2) -> str:
    """``+mean [lo, hi] verdict`` of :func:`neas.stats.paired_difference` (no interval below 2 pairs)."""
    ci = "" if diff.get("lo") is None else f" [{scale * diff['lo']:+.{digits}f}, {scale * diff['hi']:+.{digits}f}]"
    return f"{scale * diff['mean']:+.{digits}f}{ci} {diff['verdict']}"
