"""The statistics of ``neas compare`` (compare.json) and their page (compare.md, the console, the report).

Per row, each metric's per-seed values, their mean ± sd and t 95 % CI, the budget its search was held to
and the data's classes; per row, the reference row (NEAS, or the cascade-searched ensemble without a NEAS
row) minus the row paired by seed, with its CI and verdict. The page
(:func:`page`) starts with the answer in words and the rows near chance, then per budget a legend and the
tables, intervals clipped to their quantity's bounds. The numbers come from :mod:`neas.stats`, the cells
and tables from :mod:`neas.report.tables`. Plain Python, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from neas.errors import NeasError
from neas.io import read_json
from neas.records import read_arch, read_eval
from neas.report.tables import CLIPPED, METRICS, clip_interval, diff_cell, difference_bounds, markdown_table, stat_cell
from neas.runfiles import ABLATE, ARCH, PipelineLayout
from neas.stats import ci95, paired_difference

__all__ = [
    "COMPARED",
    "DIFFERENCES",
    "NEAR_CHANCE",
    "Table",
    "answer",
    "budget_statistics",
    "budget_text",
    "difference",
    "format_table",
    "near_chance",
    "page",
    "read_source",
    "row_stats",
    "seed_numbers",
]

# compare.json's metrics, in compare.md's order: mean MACs is the cost per image the row is deployed at (a
# cascade's measured on the test split; every other row's equals its static MACs)
COMPARED = ("top1", "nll", "ece", "macs", "mean_macs", "params", "latency_ms")
# paired against the reference row; costs are fixed by the arch, and latency is measured inside each job beside
# the jobs running at the same time (it depends on --max-parallel): it gets no verdict
DIFFERENCES = ("top1", "nll", "ece")
REFERENCES = {"neas": "the searched ensemble", "cascade": "the cascade-searched ensemble"}  # the first present


def read_source(path: Path) -> dict:
    """A file compare reads from a job, checked (:class:`~neas.errors.NeasError` when it does not read
    back): a run's ``eval.json``, a deep ensemble's ``ablate.json``, a searched ``arch.json``."""
    if path.name == ABLATE:
        return read_json(path, "deep ensemble", ("ensemble",))
    if path.name == ARCH:
        return read_arch(path).raw
    return read_eval(path).raw


def _held_to(path: Path, record: dict) -> dict | None:
    """What the network behind a numbers file was searched under: its search's ``constraints`` (the
    ``arch.json`` beside its retraining, or the deep ensemble's source) and the ``copies`` that share
    them; None when that file is not there (a later retraining's own directory)."""
    if path.name == ABLATE:
        arch, copies = Path(str(record.get("source", ""))), int(record.get("copies") or 1)
    else:
        stage = path.parent.parent  # <run or budget folder>/retrain/eval.json
        arch, copies = stage / ARCH if (stage / ARCH).is_file() else PipelineLayout(stage).search / ARCH, 1
    if not arch.is_file():
        return None
    try:
        return {"constraints": read_arch(arch).get("constraints") or {}, "copies": copies}
    except NeasError:
        return None


def _numbers(path: Path, cascade: bool = False) -> dict:
    """A row's numbers for one seed: ``eval.json`` of a run's retraining, or a deep ensemble's ``ablate.json``;
    with the classes of the data (when the record says) and the budget the network was held to; with
    ``cascade``, the fitted cascade's (top-1, NLL, ECE, mean MACs and mean latency on the test split)."""
    record = read_source(path)
    values = {k: record["ensemble"].get(k) for k in ("top1", "nll", "ece")}
    values.update({k: record.get(k) for k in ("macs", "params", "latency_ms")})
    values["mean_macs"] = values["macs"]  # every image runs the whole ensemble
    if cascade:
        block = record.get("cascade")
        if not isinstance(block, dict):
            raise NeasError(f"{path}: no cascade block; the cascade row's retraining fits one (retrain.cascade)")
        values.update({k: block.get(k) for k in ("top1", "nll", "ece", "mean_macs")})
        values["latency_ms"] = block.get("mean_latency_ms")
    classes = len((record.get("per_class") or {}).get("classes") or []) or None
    return {**values, "classes": classes, "held_to": _held_to(path, record)}


def seed_numbers(sources: list, cascade: bool = False) -> dict:
    """One seed's numbers from ``sources`` ([(run directory, its numbers file)], one per retraining
    seed): with several, the mean of each metric and every retraining's own; ``cascade``: the cascade's."""
    each = [{**_numbers(path, cascade), "dir": str(run)} for run, path in sources]
    if len(each) == 1:
        return each[0]
    mean = {m: None if any(e[m] is None for e in each) else sum(e[m] for e in each) / len(each) for m in COMPARED}
    first = {k: each[0][k] for k in ("dir", "classes", "held_to")}
    return {**mean, **first, "retrains": each}


def _finite(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def row_stats(values: dict) -> dict:
    """metric -> per-seed values, mean, sd and t 95 % CI (None where one seed gives none);
    ``values``: seed -> that seed's numbers. A metric some seed lacks is left out."""
    stats = {}
    for metric in COMPARED:
        xs = [v.get(metric) for v in values.values()]
        if any(x is None for x in xs):
            continue
        summary = dict(zip(("mean", "sd", "lo", "hi"), ci95(xs)))
        stats[metric] = {"values": xs, **{k: _finite(v) for k, v in summary.items()}}
    return stats


def difference(ref: dict, other: dict, metric: str) -> dict:
    """The reference row minus the row, paired by seed; the verdict says whether the reference is better on
    ``metric``."""
    seeds = sorted(set(ref) & set(other))
    a, b = ([numbers[s][metric] for s in seeds] for numbers in (ref, other))
    d = paired_difference(a, b, METRICS[metric].higher_is_better)
    return {**{k: _finite(v) for k, v in d.items()}, "seeds": seeds}


def _first(seeds: dict, key: str):
    """The first seed's ``key`` that is known (None when no seed has it)."""
    return next((numbers[key] for numbers in seeds.values() if numbers.get(key) is not None), None)


def reference_row(rows) -> str | None:
    """The row every other is judged against: ``neas``, else ``cascade``, else none."""
    return next((row for row in REFERENCES if row in rows), None)


def budget_statistics(per_seed: dict[str, dict], what: dict[str, str]) -> dict:
    """At one budget: every row's per-seed numbers, statistics, the budget it was held to and, with a
    reference row (:func:`reference_row`), its differences from every other; the data's classes when a
    record says. ``per_seed``: row -> seed -> numbers; ``what``: row -> what it is."""
    rows = {}
    for row, seeds in per_seed.items():
        held = _first(seeds, "held_to")
        rows[row] = {"what": what[row], **({"held_to": held} if held else {}), "seeds": seeds, **row_stats(seeds)}
    ref, differences = reference_row(per_seed), {}
    for row, seeds in per_seed.items():
        if ref is not None and row != ref:
            differences[row] = {m: difference(per_seed[ref], seeds, m) for m in DIFFERENCES}
    classes = next((c for seeds in per_seed.values() if (c := _first(seeds, "classes"))), None)
    return {"rows": rows, "reference": ref, "differences": differences, **({"classes": classes} if classes else {})}


_NOTE = (
    "{ref} minus each row, paired by seed: mean [t 95 % CI] and whether {ref} is better, worse or within noise "
    "(a difference equal for every seed has no interval: its verdict is the sign test's, firm from 6 seeds on). "
    "Latency is measured inside each job, beside the jobs running at the same time: no verdict."
)
NEAR_CHANCE = 0.1  # a row whose mean top-1 is less than this share of the way from chance to 100 % is near chance
_CLIPPED_NOTE = (
    f"{CLIPPED}: an end of the t interval clipped at its quantity's bound (top-1 and ECE within [0, 100] %, their "
    "differences within ±100 points; NLL, MACs, params and latency >= 0); a quantity that cannot pass its bound "
    "is in the clipped interval whenever it is in the unclipped one"
)
# how a search bound reads: constraint's metric -> (unit, scale of the stored value)
_BOUNDS = {
    "macs": ("MACs", 1e-6),
    "paper_flops": ("paper FLOPs", 1e-6),
    "params": ("params", 1e-6),
    "mean_macs": ("mean MACs of the cascade", 1e-6),
    "latency_ms": ("ms latency", 1.0),
}


@dataclass(frozen=True)
class Table:
    """A table of compare's page, rendered as Markdown (compare.md, the console) or HTML (the report)."""

    header: list[str]
    rows: list[list[str]]
    note: str = ""  # a sentence shown before it


def budget_text(constraints: dict, times: int = 1) -> str:
    """The search bounds of ``constraints`` (``{"max_macs": 700000}``) in words, ``≤ 0.7M MACs``; each
    times ``times`` (the copies that each had one share of a budget). Empty without bounds."""
    parts = []
    for key, value in constraints.items():
        bound, _, metric = key.partition("_")
        if bound not in ("max", "min") or metric not in _BOUNDS or value is None:
            continue
        unit, scale = _BOUNDS[metric]
        amount = f"{scale * value * times:.3g}" + ("M" if scale != 1 else "")
        parts.append(f"{'≤' if bound == 'max' else '≥'} {amount} {unit}")
    return ", ".join(parts)


def _held_text(held: dict | None) -> str:
    """What a row was held to, in words (empty when unknown)."""
    if not held or not budget_text(held["constraints"]):
        return ""
    each, copies = budget_text(held["constraints"]), held.get("copies", 1)
    if copies > 1:
        return f"each copy {each}, {copies} copies: {budget_text(held['constraints'], copies)} in all"
    return f"held to {each}"


def near_chance(section: dict) -> tuple[list[str], float | None]:
    """The rows of ``section`` near chance and the top-1 below which a row is: less than
    :data:`NEAR_CHANCE` of the way from chance (1 / classes) to 100 %. ``([], None)`` when the classes are unknown."""
    classes = section.get("classes")
    if not classes:
        return [], None
    chance = 1 / classes
    below = chance + NEAR_CHANCE * (1 - chance)
    rows = [row for row, r in section["rows"].items() if "top1" in r and r["top1"]["mean"] < below]
    return rows, below


def _legend(section: dict) -> list[str]:
    """What every row is and what it was held to, what the cells are, and what near chance means."""
    lines = []
    for row, r in section["rows"].items():
        held = _held_text(r.get("held_to"))
        lines.append(f"{row}: {r.get('what') or row}" + (f"; {held}" if held else ""))
    lines.append(f"cells: mean ± sd [t 95 % CI] over seeds; {_CLIPPED_NOTE}")
    classes = section.get("classes")
    if classes:
        _, below = near_chance(section)
        lines.append(
            f"(near chance): a mean top-1 below {100 * below:.1f} %, less than a tenth of the way from chance "
            f"(1/{classes} = {100 / classes:.1f} %) to 100 %"
        )
    return lines


def _cell(stats: dict | None, metric: str) -> str:
    m = METRICS[metric]
    return stat_cell(stats, m.scale, m.digits, m.bounds)


def _diff_cell(d: dict, metric: str) -> str:
    m = METRICS[metric]
    return diff_cell(d, m.scale, m.digits, difference_bounds(m.bounds))


def _tables(section: dict) -> list[Table]:
    """One budget's two tables: the rows (near-chance ones marked), and the reference row minus each row."""
    flagged, _ = near_chance(section)
    rows = [
        [row + (" (near chance)" if row in flagged else ""), *(_cell(r.get(m), m) for m in COMPARED)]
        for row, r in section["rows"].items()
    ]
    tables = [Table(["row", *(METRICS[m].label for m in COMPARED)], rows)]
    if section["differences"]:
        ref = {"neas": "NEAS"}.get(section.get("reference", "neas"), section.get("reference"))
        header = [f"{ref} minus", "seeds", *(f"Δ {METRICS[m].label}" for m in DIFFERENCES)]
        diffs = [
            [row, str(d[DIFFERENCES[0]]["n"]), *(_diff_cell(d[m], m) for m in DIFFERENCES)]
            for row, d in section["differences"].items()
        ]
        tables.append(Table(header, diffs, _NOTE.format(ref=ref)))
    return tables


def warnings(record: dict) -> list[str]:
    """What the answer must be read with: the rows near chance (at the largest budget)."""
    flagged, below = near_chance(record)
    if not flagged:
        return []
    classes = record["classes"]
    return [
        f"Near chance: {', '.join(flagged)} (mean top-1 below {100 * below:.1f} %, with chance at "
        f"{100 / classes:.1f} % for {classes} classes): rows that have barely learned say little about each other; "
        "train longer before comparing."
    ]


MIN_SEEDS = 3  # fewer paired seeds decide nothing, whatever their interval says


def seeds_to_decide(diff: dict) -> int | None:
    """Seeds a paired difference with this mean and spread would need for its t 95 % CI to exclude 0
    (the normal approximation, at least 3); None without a spread or an effect."""
    mean, sd = diff.get("mean"), diff.get("sd")
    if not mean or not sd or math.isnan(sd):
        return None
    return max(MIN_SEEDS, math.ceil((1.96 * sd / abs(mean)) ** 2) + 1)


def answer(record: dict) -> list[str]:
    """The answer in words, one line per row the reference row (NEAS, or the cascade-searched ensemble) is
    compared with (top-1, paired by seed): better or worse only when the CI excludes 0 with at least 3 seeds;
    otherwise undetermined, with the seeds that would decide at the observed spread."""
    lines, ref = [], record.get("reference", "neas")
    subject = REFERENCES.get(ref, ref)
    whose = "" if ref == "neas" else f" for {subject}"
    for row, diffs in record.get("differences", {}).items():
        d, what = diffs["top1"], record["rows"][row].get("what") or row
        effect = f"{100 * d['mean']:+.1f} points"
        if d.get("lo") is not None:  # within [-100, +100] points
            lo, hi, clip_lo, clip_hi = clip_interval(d["lo"], d["hi"], difference_bounds(METRICS["top1"].bounds))
            effect += f" [{100 * lo:+.1f}{CLIPPED * clip_lo}, {100 * hi:+.1f}{CLIPPED * clip_hi}]"
        effect += f", {d['n']} seed(s)"
        decided = d["n"] >= MIN_SEEDS and d["verdict"] in ("better", "worse")
        if decided:
            lines.append(f"{subject[0].upper()}{subject[1:]} is {d['verdict']} than {what} in top-1: {effect}.")
            continue
        need = seeds_to_decide(d)
        advice = f"run --seeds {need}" if need else "the seeds agree exactly; run more seeds"
        if d["n"] < 2:  # no spread to size the seeds from
            advice = f"run --seeds {MIN_SEEDS} or more"
        why = "too few to decide" if d["n"] < MIN_SEEDS else "the interval is wider than the effect"
        lines.append(f"Undetermined{whose} against {what} in top-1: {effect}, {why}; {advice}.")
    return lines


def page(record: dict) -> dict:
    """compare's page, for any rendering: ``answer`` and ``warnings`` (lines), ``title``, and ``sections``:
    [(heading or None, legend lines, tables)], one per budget (one without ``budgets:``)."""
    retrains = record.get("retrain_seeds", 1)
    each = f" × {retrains} retraining seeds (a seed's number is their mean)" if retrains > 1 else ""
    title = f"neas compare: {record['config']}, {record['seeds']} seed(s){each}"
    if "budgets" in record:
        sections = [
            (f"{record['budget_metric']} budget {text}", _legend(section), _tables(section))
            for text, section in record["budgets"].items()
        ]
    else:
        sections = [(None, _legend(record), _tables(record))]
    return {"answer": answer(record), "warnings": warnings(record), "title": title, "sections": sections}


def format_table(record: dict) -> str:
    """compare.md: the answer in words first (and what to read it with), then per budget a legend, the rows
    (mean ± sd [t 95 % CI] over seeds) and the reference row minus each row, paired by seed (the answer at
    the largest budget)."""
    shown = page(record)
    said = shown["answer"] + shown["warnings"]
    lines = [*said, *([""] if said else []), f"## {shown['title']}", ""]
    for heading, legend, tables in shown["sections"]:
        lines += [f"### {heading}", ""] if heading else []
        lines += [*(f"- {line}" for line in legend), ""]
        for table in tables:
            lines += [table.note, ""] if table.note else []
            lines += [*markdown_table(table.header, table.rows), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
