"""The tables of docs/RESULTS.md, computed from the per-seed summaries in docs/results/study/.

    python experiments/cifar10/tables.py            # prints the tables and writes docs/results/study/tables.md

Each row's number per pipeline seed is the mean over its retraining seeds (the pipeline's own
retrain and the extra ones); the row reports the mean over pipeline seeds ± their standard
deviation and a 95 % Student-t confidence interval. Differences between rows are paired by
pipeline seed (the same seed pairs both), with a paired-t 95 % CI; a CI that contains 0 is
reported as "within noise". Partial studies print what they have, with the number of seeds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROWS = {  # row name -> (unit prefix, what it is)
    "NEAS, diversity shrinking (K=2)": ("k2_diversity", "the paper's method"),
    "quality-only shrinking, S = I (K=2)": ("k2_quality", "isolates the similarity matrix"),
    "accuracy shrinking (K=2)": ("k2_accuracy", "the paper's baseline shrinking"),
    "no shrinking (K=2)": ("k2_none", "one-shot ensemble search, plain"),
    "best single network (K=1)": ("k1", "single-path one-shot search, same budget"),
    "deep ensemble: 2 x best K=1 at half budget": ("deep", "independently trained copies, equal total MACs"),
}
METRICS = (("top1", "top-1 (%)", 100, 2), ("nll", "NLL", 1, 3), ("ece", "ECE (%)", 100, 2),
           ("disagreement", "disagreement (%)", 100, 2), ("oracle_top1", "oracle top-1 (%)", 100, 2))


def _load(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def _values(summary: dict) -> dict:
    """top-1, NLL, ECE, diversity and costs of one finished unit."""
    if summary["kind"] == "deep":
        r = summary["record"]
        return {**{k: r["ensemble"][k] for k in ("top1", "nll", "ece")}, **r["diversity"], "macs": r["macs"], "params": r["params"],
                "latency_ms": r.get("latency_ms")}
    e = summary["eval"]
    return {**{k: e["ensemble"][k] for k in ("top1", "nll", "ece")}, **e["diversity"], "macs": e["macs"], "params": e["params"],
            "latency_ms": e.get("latency_ms")}


def per_seed(units: dict, prefix: str) -> dict[int, dict]:
    """{pipeline seed: metrics averaged over its retraining seeds, with ``retrains``: how many}."""
    out = {}
    for seed in range(10):
        if prefix == "deep":
            runs = [units[f"deep_seed{seed}"]] if f"deep_seed{seed}" in units else []
        else:
            base = f"{prefix}_seed{seed}"
            runs = [units[n] for n in [base] + [f"{base}_retrain{r}" for r in (1, 2)] if n in units]
            if base not in units:
                runs = []
        if not runs:
            continue
        values = [_values(u) for u in runs]
        out[seed] = {k: float(np.mean([v[k] for v in values if v.get(k) is not None])) for k in values[0] if values[0][k] is not None}
        out[seed]["retrains"] = len(values)
        out[seed]["retrain_sd_top1"] = float(np.std([v["top1"] for v in values], ddof=1)) if len(values) > 1 else float("nan")
    return out


def ci95(xs: "list[float]") -> tuple[float, float, float, float]:
    """mean, sd, CI low, CI high (Student t); the CI is nan below 2 values."""
    xs = np.asarray(xs, float)
    mean = float(xs.mean())
    if len(xs) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(xs.std(ddof=1))
    if sd == 0:
        return mean, 0.0, mean, mean
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=mean, scale=sd / math.sqrt(len(xs)))
    return mean, sd, float(lo), float(hi)


def _cell(xs, scale, digits):
    mean, sd, lo, hi = ci95(xs)
    if math.isnan(sd):
        return f"{scale * mean:.{digits}f} (n={len(xs)})"
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def main_table(units: dict) -> str:
    lines = ["| model | seeds × retrains | " + " | ".join(m[1] for m in METRICS) + " | MACs (M) | params (M) | CPU latency (ms) |",
             "|---|---|" + "---|" * len(METRICS) + "---|---|---|"]
    for name, (prefix, _) in ROWS.items():
        seeds = per_seed(units, prefix)
        if not seeds:
            lines.append(f"| {name} | not run yet |" + " |" * (len(METRICS) + 3))
            continue
        rows = list(seeds.values())
        cells = [_cell([r[key] for r in rows], scale, digits) for key, _, scale, digits in METRICS]
        costs = [f"{np.mean([r['macs'] for r in rows]) / 1e6:.3f}", f"{np.mean([r['params'] for r in rows]) / 1e6:.3f}",
                 f"{np.mean([r['latency_ms'] for r in rows if 'latency_ms' in r]):.2f}" if any("latency_ms" in r for r in rows) else "-"]
        lines.append(f"| {name} | {len(rows)} × {'/'.join(str(r['retrains']) for r in rows)} | " + " | ".join(cells + costs) + " |")
    return "\n".join(lines)


def differences(units: dict, reference: str = "k2_diversity") -> str:
    ref = per_seed(units, reference)
    lines = [f"| {ROWS_BY_PREFIX[reference]} minus | paired seeds | Δ top-1 (pp) [95 % CI] | Δ NLL [95 % CI] | verdict (top-1) |",
             "|---|---|---|---|---|"]
    for name, (prefix, _) in ROWS.items():
        if prefix == reference:
            continue
        other = per_seed(units, prefix)
        common = sorted(set(ref) & set(other))
        if len(common) < 2:
            lines.append(f"| {name} | {len(common)} | - | - | needs 2+ paired seeds |")
            continue
        d_top1 = [ref[s]["top1"] - other[s]["top1"] for s in common]
        d_nll = [ref[s]["nll"] - other[s]["nll"] for s in common]
        m, _, lo, hi = ci95(d_top1)
        mn, _, lon, hin = ci95(d_nll)
        verdict = "within noise" if lo <= 0 <= hi else ("NEAS better" if m > 0 else "NEAS worse")
        lines.append(f"| {name} | {len(common)} | {100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {mn:+.4f} [{lon:+.4f}, {hin:+.4f}] | "
                     f"{verdict} |")
    return "\n".join(lines)


ROWS_BY_PREFIX = {prefix: name for name, (prefix, _) in ROWS.items()}


def wall_times(units: dict) -> str:
    pipes = [u for u in units.values() if u["kind"] == "pipeline"]
    rest = [u for u in units.values() if u["kind"] != "pipeline"]
    total = sum(u["unit_wall_s"] for u in units.values()) / 3600
    mean_pipe = np.mean([u["unit_wall_s"] for u in pipes]) / 60 if pipes else float("nan")
    return (f"{len(units)} units finished, {total:.1f} h of one thread in all; a pipeline takes {mean_pipe:.1f} min on average "
            f"({len(pipes)} pipelines, {len(rest)} retrains and deep ensembles).")


def write_tables(results: Path) -> str:
    units = _load(results)
    text = "\n\n".join(["## Main table: CIFAR-10 final-test, ≤ 1.5M MACs", main_table(units),
                        "## Paired differences (by pipeline seed)", differences(units), "## Wall time", wall_times(units)]) + "\n"
    (results / "tables.md").write_text(text)
    return text


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2] / "docs" / "results" / "study"
    print(write_tables(Path(sys.argv[1]) if len(sys.argv) > 1 else root))
