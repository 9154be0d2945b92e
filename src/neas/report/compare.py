"""The statistics of ``neas compare`` (compare.json) and their tables (compare.md).

Per row, each metric's per-seed values, their mean ± sd and t 95 % CI; per row, the reference row (NEAS,
or the cascade-searched ensemble without a NEAS row) minus the row, paired by seed, with its CI and
verdict. The numbers come from :mod:`neas.stats`, the cells and tables from :mod:`neas.report.tables`.
Plain Python, no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

from neas.errors import NeasError
from neas.io import read_json
from neas.records import read_arch, read_eval
from neas.report.tables import METRICS, diff_cell, markdown_table, stat_cell
from neas.runfiles import ABLATE, ARCH
from neas.stats import ci95, paired_difference

__all__ = [
    "COMPARED",
    "DIFFERENCES",
    "budget_statistics",
    "difference",
    "format_table",
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


def _numbers(path: Path, cascade: bool = False) -> dict:
    """A row's numbers for one seed: ``eval.json`` of a run's retraining, or a deep ensemble's ``ablate.json``;
    with ``cascade``, the fitted cascade's (top-1, NLL, ECE, mean MACs and mean latency on the test split)."""
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
    return values


def seed_numbers(sources: list, cascade: bool = False) -> dict:
    """One seed's numbers from ``sources`` ([(run directory, its numbers file)], one per retraining
    seed): with several, the mean of each metric and every retraining's own; ``cascade``: the cascade's."""
    each = [{**_numbers(path, cascade), "dir": str(run)} for run, path in sources]
    if len(each) == 1:
        return each[0]
    mean = {m: None if any(e[m] is None for e in each) else sum(e[m] for e in each) / len(each) for m in COMPARED}
    return {**mean, "dir": each[0]["dir"], "retrains": each}


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


def reference_row(rows) -> str | None:
    """The row every other is judged against: ``neas``, else ``cascade``, else none."""
    return next((row for row in REFERENCES if row in rows), None)


def budget_statistics(per_seed: dict[str, dict], what: dict[str, str]) -> dict:
    """At one budget: every row's per-seed numbers, statistics and, with a reference row (:func:`reference_row`),
    its differences from every other. ``per_seed``: row -> seed -> numbers; ``what``: row -> what it is."""
    rows = {row: {"what": what[row], "seeds": seeds, **row_stats(seeds)} for row, seeds in per_seed.items()}
    ref, differences = reference_row(per_seed), {}
    for row, seeds in per_seed.items():
        if ref is not None and row != ref:
            differences[row] = {m: difference(per_seed[ref], seeds, m) for m in DIFFERENCES}
    return {"rows": rows, "reference": ref, "differences": differences}


_NOTE = (
    "{ref} minus each row, paired by seed: mean [t 95 % CI] and whether {ref} is better, worse or within noise "
    "(a difference equal for every seed has no interval: its verdict is the sign test's, firm from 6 seeds on). "
    "Latency is measured inside each job, beside the jobs running at the same time: no verdict."
)


def _cell(stats: dict | None, metric: str) -> str:
    return stat_cell(stats, METRICS[metric].scale, METRICS[metric].digits)


def _diff_cell(d: dict, metric: str) -> str:
    return diff_cell(d, METRICS[metric].scale, METRICS[metric].digits)


def _tables(section: dict) -> list[str]:
    """One budget's two tables: the rows, and the reference row minus each row."""
    rows = [[row, *(_cell(r.get(m), m) for m in COMPARED)] for row, r in section["rows"].items()]
    lines = markdown_table(["row", *(METRICS[m].label for m in COMPARED)], rows)
    if not section["differences"]:
        return lines
    ref = {"neas": "NEAS"}.get(section.get("reference", "neas"), section.get("reference"))
    header = [f"{ref} minus", "seeds", *(f"Δ {METRICS[m].label}" for m in DIFFERENCES)]
    diffs = [
        [row, d[DIFFERENCES[0]]["n"], *(_diff_cell(d[m], m) for m in DIFFERENCES)]
        for row, d in section["differences"].items()
    ]
    return [*lines, "", _NOTE.format(ref=ref), "", *markdown_table(header, diffs)]


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
        if d.get("lo") is not None:
            effect += f" [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
        effect += f", {d['n']} seed(s)"
        decided = d["n"] >= MIN_SEEDS and d["verdict"] in ("better", "worse")
        if decided:
            lines.append(f"{subject[0].upper()}{subject[1:]} is {d['verdict']} than {what} in top-1: {effect}.")
            continue
        need = seeds_to_decide(d)
        advice = f"run --seeds {need}" if need else "the seeds agree exactly; run more seeds"
        why = "too few to decide" if d["n"] < MIN_SEEDS else "the interval is wider than the effect"
        lines.append(f"Undetermined{whose} against {what} in top-1: {effect}, {why}; {advice}.")
    return lines


def format_table(record: dict) -> str:
    """compare.md: the answer in words first, then the rows (mean ± sd [t 95 % CI] over seeds) and NEAS minus
    each row, paired by seed; with ``budgets:``, both at each budget (the answer at the largest)."""
    retrains = record.get("retrain_seeds", 1)
    each = f" × {retrains} retraining seeds (a seed's number is their mean)" if retrains > 1 else ""
    said = answer(record)
    lines = [
        *said,
        *([""] if said else []),
        f"## neas compare: {record['config']}, {record['seeds']} seed(s){each}",
        "",
    ]
    if "budgets" not in record:
        return "\n".join(lines + _tables(record)) + "\n"
    for text, section in record["budgets"].items():
        lines += [f"### {record['budget_metric']} budget {text}", "", *_tables(section), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
