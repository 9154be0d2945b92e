"""The tables of docs/RESULTS.md, computed from the per-seed summaries in docs/results/study/.

    python experiments/cifar10/tables.py            # prints the tables, writes docs/results/study/tables.md
                                                    # and the tables of docs/RESULTS.md (between its markers)

Each row's number per pipeline seed is the mean over its retraining seeds (the pipeline's own
retrain and the extra ones); the row reports the mean over pipeline seeds ± their standard
deviation and a 95 % Student-t confidence interval. Differences between rows are paired by
pipeline seed (the same seed pairs both), with a paired-t 95 % CI; a CI that contains 0 is
reported as "within noise". Every verdict is ``neas.stats``' (``paired_difference``, ``judge_differences``)
and every table and cell ``neas.report.tables``', as in ``neas compare``. Partial studies print
what they have, with the number of seeds.

Kendall τ (and Spearman ρ) carry percentile-bootstrap 95 % CIs over the 30 ranked ensembles:
``scipy.stats.bootstrap(paired=True, method="percentile")`` with 10,000 resamples
(``neas.search.ranking.RESAMPLES``), τ-b vectorised over the resamples, seeded (seed 0 for the
pooled intervals, the supernet seed for per-seed ones); the per-seed intervals are recomputed
here from the committed scores, not read from the summaries (``neas rank`` made those with 1,000).
Pooled over supernet seeds, the statistic is the mean over seeds of τ(seed s's one-shot
scores, from-scratch scores), every seed resampled with the same indices.

Monte-Carlo error of a bootstrap bound. A percentile bound from B resamples is itself random:
another bootstrap seed moves it. Its Monte-Carlo error is the band between the bootstrap
distribution's quantiles q ± 2·sqrt(q(1−q)/B) (q = 0.025 for the lower bound, 0.975 for the
upper). The number of resamples below the bound an infinite number of resamples would give is
Binomial(B, q), so the band holds that bound with ≈ 95 % probability; one bootstrap run gives it
at no extra cost. Checked against the other definition, the spread over bootstrap seeds: for
the pooled diversity − accuracy Δτ, the lower bound over 20 seeds has sd 0.0027 (range −0.013
to −0.003) and the band is 0.008 wide, a half-width of about 1.5 sd. A verdict that needs a
bootstrap CI to exclude 0 is reported as **borderline** when 0 lies inside the band of the
bound on the difference's side (the lower bound of a positive mean difference): whether the CI
excludes 0 then depends on the bootstrap's seed, not on the data. t CIs have no Monte-Carlo
error: one that contains 0 makes the verdict "within noise" whatever the bootstrap says.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
from plan import OLD_RANK, SHRINK_MODES  # experiments/cifar10/plan.py
from plan import units as study_units
from scipy import stats

from neas.report.tables import METRICS as SHOWN
from neas.report.tables import ci_cell, interval_cell, markdown_table, values_cell
from neas.search.ranking import (
    RESAMPLES,
    kendall_tau,
    paired_bootstrap,
    percentile_ci,
    rank_correlation,
    tau_difference,
)
from neas.stats import judge_differences, paired_difference

ROWS = {  # row name -> (unit prefix, what it is)
    "NEAS, diversity shrinking (K=2)": ("k2_diversity", "the paper's method"),
    "quality-only shrinking, S = I (K=2)": ("k2_quality", "isolates the similarity matrix"),
    "accuracy shrinking (K=2)": ("k2_accuracy", "the paper's baseline shrinking"),
    "no shrinking (K=2)": ("k2_none", "one-shot ensemble search, plain"),
    "best single network (K=1)": ("k1", "single-path one-shot search, same budget"),
    "deep ensemble: 2 x best K=1 at half budget": ("deep", "independently trained copies, equal total MACs"),
}
# the main table's quality columns, shown as neas compare shows them, but NLL to 3 places (docs/RESULTS.md's text)
METRICS = {m: SHOWN[m] for m in ("top1", "nll", "ece", "disagreement", "oracle_top1")}
METRICS["nll"] = dataclasses.replace(SHOWN["nll"], digits=3)


def _load(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


RANK_PAIRS = (("diversity", "none"), ("diversity", "accuracy"), ("diversity", "quality"), ("none", "accuracy"))


def _pooled_bootstrap(
    a: list[list[float]],
    b: list[list[float]] | None,
    scratch: list[float],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict:
    """Percentile 95 % CI of the mean over supernet seeds of τ(a_s, scratch) (minus τ(b_s, scratch)),
    resampling the ranked ensembles with the same indices for every seed: the noise of the
    30-ensemble sample, which a t interval over 3 seeds does not see. ``percentile_ci``'s dict:
    ``ci``, each bound's Monte-Carlo band ``mc``, ``resamples`` (those with a ranking)."""
    k, m = len(a), len(b or [])

    def statistic(*xs, axis=-1):
        y = xs[-1]
        t = np.mean([kendall_tau(x, y, axis) for x in xs[:k]], axis=0)
        return t - np.mean([kendall_tau(x, y, axis) for x in xs[k : k + m]], axis=0) if m else t

    return percentile_ci(paired_bootstrap([*a, *(b or []), scratch], statistic, resamples, seed))


def _band(boot: dict, mean: float, scale: float = 1) -> str:
    """The Monte-Carlo band of the bootstrap bound on the mean's side (the one a verdict turns on)."""
    band = boot["mc"][0] if mean > 0 else boot["mc"][1]
    return f"[{scale * band[0]:+.3f}, {scale * band[1]:+.3f}]"


def _rank_units(units: dict) -> dict[str, dict[int, dict]]:
    """{mode: {supernet seed: that rank unit's summary}}."""
    out = {m: {} for m in SHRINK_MODES}
    for u in units.values():
        if u["kind"] == "rank":
            out[u["mode"]][u["seed"]] = u
    return out


def _scratch_of(rank_units) -> list:
    """The from-scratch scores every rank unit was compared with: one list, or the pairing breaks."""
    lists = [u["scratch_acc"] for u in rank_units]
    if any(x != lists[0] for x in lists):
        raise ValueError("rank units compared with different from-scratch scores; they cannot be paired")
    return lists[0]


def _ranking_row(mode: str, seeds: dict[int, dict]) -> list[str]:
    """One shrinking mode's Kendall τ and Spearman ρ: per supernet seed (a bootstrap CI over the
    ensembles, recomputed from the committed scores with RESAMPLES resamples: the summaries' have
    1,000) and pooled over seeds (mean ± sd [t CI]; τ also with its bootstrap CI over the ensembles)."""
    corr = {
        s: rank_correlation(u["rank"]["oneshot_acc"], u["scratch_acc"], RESAMPLES, s) for s, u in sorted(seeds.items())
    }
    per, pooled = {}, {}
    for stat in ("kendall_tau", "spearman_rho"):
        per[stat] = "; ".join(f"s{s}: {ci_cell(c[stat], c[f'{stat}_ci95'], 3, 2)}" for s, c in corr.items())
        pooled[stat] = values_cell([u["rank"][stat] for u in seeds.values()], 1, 3)
    acc = [100 * np.mean(u["rank"]["oneshot_acc"]) for u in seeds.values()]
    inside = "/".join(str(len(u["rank"]["in_shrunk_space"])) for _, u in sorted(seeds.items()))
    boot = _pooled_bootstrap([u["rank"]["oneshot_acc"] for u in seeds.values()], None, _scratch_of(seeds.values()))
    tau = f"{pooled['kendall_tau']} {_braces(boot, signed=False)}"
    return [mode, per["kendall_tau"], tau, per["spearman_rho"], pooled["spearman_rho"], values_cell(acc, 1, 2), inside]


def _braces(boot: dict, signed: bool = True) -> str:
    """A bootstrap CI over the ensembles, in braces (beside a t CI over seeds, in brackets)."""
    sign = "+" if signed else ""
    return f"{{{boot['ci'][0]:{sign}.3f}, {boot['ci'][1]:{sign}.3f}}}"


def _tau_difference_row(by_mode: dict[str, dict[int, dict]], a: str, b: str) -> list[str]:
    """τ(a) − τ(b) paired by supernet seed: per seed (paired bootstrap CI), and their mean with a t CI
    over seeds and a bootstrap CI over the ensembles; the verdict (``judge_differences``) needs both to exclude 0."""
    common = sorted(set(by_mode[a]) & set(by_mode[b]))
    per, diffs = [], []
    for s in common:
        ua, ub = by_mode[a][s], by_mode[b][s]
        d = tau_difference(ua["rank"]["oneshot_acc"], ub["rank"]["oneshot_acc"], ua["scratch_acc"], RESAMPLES, s)
        per.append(f"s{s}: {ci_cell(d['tau_difference'], d['ci95'], 3, 2, signed=True)}")
        diffs.append(d["tau_difference"])
    boot = _pooled_bootstrap(
        [by_mode[a][s]["rank"]["oneshot_acc"] for s in common],
        [by_mode[b][s]["rank"]["oneshot_acc"] for s in common],
        _scratch_of(by_mode[a].values()),
    )
    m, _, lo, hi, outcome = judge_differences(diffs, boot)  # no spread: no interval, the sign test's outcome
    if len(diffs) < 2:
        verdict = "needs 2+ seeds"
    else:
        verdict = {"noise": "within noise", "borderline": "borderline", "+": f"{a} better", "-": f"{b} better"}[outcome]
    mean = interval_cell({"mean": m, "lo": lo, "hi": hi}, 1, 3)
    return [f"{a} − {b}", "; ".join(per), f"{mean} {_braces(boot)}", _band(boot, m), verdict]


def ranking(units: dict) -> str:
    """Kendall tau per shrinking mode: per supernet seed (bootstrap CI over the 30 ensembles) and
    pooled over seeds (mean ± sd, with a Student-t CI over the seeds and a bootstrap CI over the
    ensembles); paired differences by seed, judged by both CIs."""
    by_mode = _rank_units(units)
    header = [
        "shrinking",
        "Kendall τ per supernet seed [bootstrap 95 % CI]",
        "pooled τ: mean ± sd [t CI over seeds] {bootstrap CI over ensembles}",
        "Spearman ρ per seed [bootstrap 95 % CI]",
        "pooled ρ",
        "mean one-shot top-1 (%)",
        "in the shrunk space (of 30)",
    ]
    rows = [_ranking_row(m, seeds) if seeds else [m, "not run yet", *[""] * 5] for m, seeds in by_mode.items()]
    differences = [_tau_difference_row(by_mode, a, b) for a, b in RANK_PAIRS if set(by_mode[a]) & set(by_mode[b])]
    header_d = [
        "Δτ, paired by supernet seed",
        "per seed [paired bootstrap 95 % CI]",
        "mean [t CI over seeds] {bootstrap CI over ensembles}",
        "Monte-Carlo band of the bootstrap bound on the mean's side",
        "verdict",
    ]
    return "\n".join([*markdown_table(header, rows), "", *markdown_table(header_d, differences)])


def _alignment_check() -> str:
    """The from-scratch scores are reused for ensembles redrawn with the seeded sampler: if the
    draw were not the one that was trained, scores and ensembles would be unrelated (τ ≈ 0)."""
    from neas.cost import cost_table
    from neas.space import EnsembleArch, SearchSpace

    path = OLD_RANK.parents[1] / "study" / "inputs" / "rank_scratch.json"
    if not path.is_file():
        return ""
    record = json.loads(path.read_text())
    table = cost_table(SearchSpace.resolve(str(Path(__file__).resolve().parent / "space.yaml")), 10)
    macs = [table.cost(EnsembleArch.from_json(e["arch"])).macs for e in record["ensembles"]]
    test = stats.kendalltau(macs, [e["top1"] for e in record["ensembles"]])
    return (
        f"Check that the redrawn ensembles are the ones trained from scratch: Kendall τ between their MACs and their "
        f"from-scratch top-1 is {test.statistic:.2f} (p = {test.pvalue:.3f}); unrelated pairs would give τ ≈ 0."
    )


def diagnostic(units: dict) -> str:
    """The BN bug's size: one-shot accuracy and ranking before the fix (the old study's supernets,
    class-sorted BN batches, seed 0) and after (this study's supernets, every seed)."""
    by_mode = _rank_units(units)
    old = json.loads(OLD_RANK.read_text()) if OLD_RANK.is_file() else {"supernets": {}}
    old_by_mode = {e["shrink"]: e for e in old["supernets"].values()}
    scratch = 100 * np.mean(old.get("scratch_acc", [float("nan")]))
    searched_old = {}
    for mode in ("diversity", "none", "accuracy"):
        path = OLD_RANK.parent / f"summary_k2_{mode}.json"
        if path.is_file():
            searched_old[mode] = json.loads(path.read_text())["supernet_acc"]
    header = [
        "shrinking",
        "one-shot top-1 (%), before",
        "after (mean over seeds)",
        "Kendall τ before",
        "after (pooled)",
        "searched ensemble's one-shot top-1 (%), before",
        "after",
    ]
    rows = []
    for mode in SHRINK_MODES:
        before = old_by_mode.get(mode)
        seeds = by_mode[mode]
        pipes = [
            u["search"]["supernet_acc"]
            for n, u in units.items()
            if u["kind"] == "pipeline" and n.startswith(f"k2_{mode}_seed") and "search" in u
        ]
        rows.append(
            [
                mode,
                f"{100 * np.mean(before['oneshot_acc']):.2f}" if before else "-",
                values_cell([100 * np.mean(u["rank"]["oneshot_acc"]) for u in seeds.values()], 1, 2) if seeds else "-",
                f"{before['kendall_tau']:.3f}" if before else "-",
                values_cell([u["rank"]["kendall_tau"] for u in seeds.values()], 1, 3) if seeds else "-",
                f"{100 * searched_old[mode]:.2f}" if mode in searched_old else "-",
                values_cell([100 * a for a in pipes], 1, 2) if pipes else "-",
            ]
        )
    text = (
        f"30 ensembles drawn from the full space; from scratch (3 epochs, search-val) they score {scratch:.2f} % on "
        "average. " + _alignment_check()
    )
    return "\n".join([text, "", *markdown_table(header, rows)])


QUIET = {}  # unit -> latency measured on a quiet machine (study.py latency), when it exists


def _values(summary: dict) -> dict:
    """top-1, NLL, ECE, diversity and costs of one finished unit; the latency is the quiet
    re-measurement of its network when there is one (a retraining seed: its pipeline's network)."""
    quiet = QUIET.get(summary["unit"]) or QUIET.get(
        re.sub(r"_retrain\d+$", "", summary["unit"])
    )  # a retraining seed: its network's
    record = summary["record"] if summary["kind"] == "deep" else summary["eval"]
    # once the quiet re-measurement exists, only its numbers are used: never a mix of the two kinds
    latency = quiet["ms"] if quiet else (None if QUIET else record.get("latency_ms"))
    return {
        **{k: record["ensemble"][k] for k in ("top1", "nll", "ece")},
        **record["diversity"],
        "macs": record["macs"],
        "params": record["params"],
        "latency_ms": latency,
    }


def per_seed(units: dict, prefix: str) -> dict[int, dict]:
    """{pipeline seed: metrics averaged over its retraining seeds, with ``retrains``: how many}."""
    out = {}
    for seed in range(10):
        prefix_seed = f"{prefix}_seed{seed}"
        runs = [units[n] for n in [prefix_seed] + [f"{prefix_seed}_retrain{r}" for r in (1, 2)] if n in units]
        if prefix_seed not in units:
            runs = []
        if not runs:
            continue
        values = [_values(u) for u in runs]
        out[seed] = {
            k: float(np.mean([v[k] for v in values if v.get(k) is not None]))
            for k in values[0]
            if values[0][k] is not None
        }
        out[seed]["retrains"] = len(values)
        out[seed]["retrain_sd_top1"] = (
            float(np.std([v["top1"] for v in values], ddof=1)) if len(values) > 1 else float("nan")
        )
    return out


def _costs(rows: list[dict]) -> list[str]:
    """The mean MACs and parameters (millions) of a row's networks."""
    return [f"{np.mean([r['macs'] for r in rows]) / 1e6:.3f}", f"{np.mean([r['params'] for r in rows]) / 1e6:.3f}"]


def main_table(units: dict) -> str:
    """Each row over pipeline seeds: quality (mean ± sd [t CI]), mean costs and the quiet CPU latency."""
    header = ["model", "seeds × retrains", *(m.label for m in METRICS.values())]
    header += [SHOWN["macs"].label, SHOWN["params"].label, f"CPU {SHOWN['latency_ms'].label}"]
    rows = []
    for name, (prefix, _) in ROWS.items():
        seeds = list(per_seed(units, prefix).values())
        if not seeds:
            rows.append([name, "not run yet", *[""] * (len(header) - 2)])
            continue
        quality = [values_cell([r[key] for r in seeds], m.scale, m.digits) for key, m in METRICS.items()]
        ms = [r["latency_ms"] for r in seeds if "latency_ms" in r]
        latency = f"{np.mean(ms):.2f}" if ms else "-"
        retrains = f"{len(seeds)} × {'/'.join(str(r['retrains']) for r in seeds)}"
        rows.append([name, retrains, *quality, *_costs(seeds), latency])
    return "\n".join(markdown_table(header, rows))


_NEAS = {"better": "NEAS better", "worse": "NEAS worse", "within noise": "within noise"}  # paired_difference's verdict


def differences(units: dict, reference: str = "k2_diversity") -> str:
    """The reference row minus each other row, paired by pipeline seed: top-1 and NLL with their t CIs,
    and the verdict on top-1 (:func:`neas.stats.paired_difference`)."""
    ref = per_seed(units, reference)
    header = [
        f"{ROWS_BY_PREFIX[reference]} minus",
        "paired seeds",
        "Δ top-1 (pp) [95 % CI]",
        "Δ NLL [95 % CI]",
        "verdict (top-1)",
    ]
    rows = []
    for name, (prefix, _) in ROWS.items():
        if prefix == reference:
            continue
        other = per_seed(units, prefix)
        common = sorted(set(ref) & set(other))
        if len(common) < 2:
            rows.append([name, len(common), "-", "-", "needs 2+ paired seeds"])
            continue
        top1, nll = (
            paired_difference([ref[s][m] for s in common], [other[s][m] for s in common]) for m in ("top1", "nll")
        )
        rows.append([name, len(common), interval_cell(top1, 100, 2), interval_cell(nll, 1, 4), _NEAS[top1["verdict"]]])
    return "\n".join(markdown_table(header, rows))


ROWS_BY_PREFIX = {prefix: name for name, (prefix, _) in ROWS.items()}


def wall_times(units: dict) -> str:
    total = sum(u["unit_wall_s"] for u in units.values()) / 3600
    kinds = {
        "pipeline": "pipelines",
        "retrain": "extra retraining seeds",
        "deep": "deep ensembles",
        "rank": "ranking supernets",
        "ablate": "ablation retrains (3 models each)",
    }
    parts = []
    for kind, label in kinds.items():
        times = [u["unit_wall_s"] for u in units.values() if u["kind"] == kind]
        if times:
            parts.append(f"{len(times)} {label}, {np.mean(times) / 60:.1f} min each")
    return (
        f"{len(units)} units finished, {total:.1f} h of one thread in all ({'; '.join(parts)}), with two one-thread "
        f"units side by side on the 2 cores."
    )


def _delta(seeds: dict[int, dict], ref: dict[int, dict]) -> str:
    """A row's top-1 minus the reference's, paired by retraining seed (:func:`neas.stats.paired_difference`)."""
    common = sorted(set(seeds) & set(ref))
    if len(common) < 2:
        return "needs 2+ paired seeds"
    d = paired_difference([seeds[c]["top1"] for c in common], [ref[c]["top1"] for c in common])
    return interval_cell(d, 100, 2) + (" within noise" if d["verdict"] == "within noise" else "")


def _rows_with_differences(rows: dict[str, dict[int, dict]], reference: str, extra=()) -> str:
    """One line per row (mean ± sd [t CI] over retraining seeds), then each row minus the
    reference, paired by retraining seed. ``rows``: name -> {retrain seed: values}."""
    header = ["model", "retraining seeds", METRICS["top1"].label, f"Δ top-1 vs {reference} (pp) [paired 95 % CI]"]
    header += [METRICS["disagreement"].label, METRICS["oracle_top1"].label, SHOWN["macs"].label, SHOWN["params"].label]
    lines = []
    for name, seeds in rows.items():
        if not seeds:
            lines.append([name, "not run yet", *[""] * (len(header) + len(extra) - 2)])
            continue
        vals = list(seeds.values())
        lines.append(
            [
                name,
                len(vals),
                values_cell([v["top1"] for v in vals], 100, 2),
                "—" if name == reference else _delta(seeds, rows.get(reference, {})),
                values_cell([v["disagreement"] for v in vals], 100, 2),
                values_cell([v["oracle_top1"] for v in vals], 100, 2),
                *_costs(vals),
                *(fn(vals) for _, fn in extra),
            ]
        )
    return "\n".join(markdown_table([*header, *(e for e, _ in extra)], lines))


def _paths_rows(units: dict) -> dict[str, dict[int, dict]]:
    """K = 2, 3, 5 (seed-0 diversity searches): {row: {retraining seed index: values}}."""
    rows = {}
    for k in (2, 3, 5):
        base = f"k{k}_diversity_seed0"
        rows[f"K = {k}"] = {}
        for r, name in enumerate([base, f"{base}_retrain1", f"{base}_retrain2"]):
            if name in units and base in units:
                u, paths = units[name], [p["top1"] for p in units[name]["eval"]["paths"]]
                rows[f"K = {k}"][r] = {
                    **_values(u),
                    "path_mean": float(np.mean(paths)) if paths else float("nan"),
                    "split": units[base].get("arch", {}).get("split", "-"),
                }
    return rows


def paths_table(units: dict) -> str:
    """Paper Table 5: K = 2, 3, 5 under one budget, seed-0 searches, three retraining seeds."""
    return _rows_with_differences(
        _paths_rows(units),
        "K = 2",
        extra=(
            ("mean path top-1 (%)", lambda v: values_cell([x["path_mean"] for x in v], 100, 2)),
            ("searched split", lambda v: str(v[0]["split"])),
            ("CPU latency (ms)", _latency_cell),
        ),
    )


def _latency_cell(vals: list[dict]) -> str:
    """The quiet re-measurement of a row's network (the same network in every retraining seed)."""
    ms = [v["latency_ms"] for v in vals if v.get("latency_ms") is not None]
    return f"{np.mean(ms):.2f}" if ms else "-"


def _ablation_rows(units: dict, which: str, reference: str) -> dict[str, dict[int, dict]]:
    """The variants of one ablation (reference first): {variant: {retraining seed: values}}."""
    rows = {}
    for u in units.values():
        if u["kind"] == "ablate" and u["which"] == which:
            for name, v in u["record"]["variants"].items():
                rows.setdefault(name, {})[u["retrain_seed"]] = {
                    "top1": v["top1"],
                    **(v.get("diversity") or {}),
                    "macs": v["macs"],
                    "params": v["params"],
                    "split": v["split"],
                }
    return {reference: rows.pop(reference, {}), **rows} if rows else {}


def ablation_table(units: dict, which: str, reference: str) -> str:
    """Paper Tables 3 and 4 on the seed-0 diversity search: each variant over retraining seeds."""
    rows = _ablation_rows(units, which, reference)
    if not rows:
        return "not run yet"
    return _rows_with_differences(rows, reference, extra=(("split", lambda v: str(v[0]["split"])),))


def _judge(
    diffs: list[float], scale: float, unit: str, paper_sign: int = 0, extra_ci: dict | None = None
) -> tuple[str, str]:
    """(measured: mean [95 % CI], verdict) for paired differences whose expected sign (the
    paper's) is ``paper_sign`` (0: no claim, a new question). ``extra_ci``: a bootstrap interval
    (``percentile_ci``'s dict, the ensemble bootstrap of a τ difference) that must also exclude
    0; "borderline" when its bound on the mean's side is within Monte-Carlo error of 0 (``decide``)."""
    if not diffs:
        return "-", "not run yet"
    if len(diffs) < 2:
        return f"{scale * diffs[0]:+.2f} {unit} (n=1)", "needs 2+ seeds"
    m, _, lo, hi, outcome = judge_differences(diffs, extra_ci)  # no spread: no interval, the sign test's outcome
    interval = "no spread" if math.isnan(lo) else f"[{scale * lo:+.2f}, {scale * hi:+.2f}]"
    text = f"{scale * m:+.2f} {unit} {interval} (n={len(diffs)})"
    if extra_ci is not None:
        (blo, bhi) = extra_ci["ci"]
        text += (
            f", ensembles resampled [{scale * blo:+.3f}, {scale * bhi:+.3f}] (Monte-Carlo band of its bound on the "
            "mean's side: "
            f"{_band(extra_ci, m, scale)})"
        )
    if outcome in ("noise", "borderline"):
        return text, "within noise" if outcome == "noise" else "borderline"
    if paper_sign == 0:
        return text, "better" if outcome == "+" else "worse"
    return text, "agrees" if (outcome == "+") == (paper_sign > 0) else "disagrees"


def _ranking_claims(units: dict) -> list[list[str]]:
    """Diversity shrinking ranks ensembles better than each other mode (Kendall τ pooled over
    supernet seeds): the t CI over seeds and the bootstrap CI over the ensembles must both exclude 0."""
    by_mode, claims = _rank_units(units), []
    for a, b, paper in (
        ("diversity", "none", "τ 0.65 vs 0.45"),
        ("diversity", "accuracy", "τ 0.65 vs 0.42"),
        ("diversity", "quality", "— (new: what S adds)"),
    ):
        common = sorted(set(by_mode[a]) & set(by_mode[b]))
        diffs = [by_mode[a][s]["rank"]["kendall_tau"] - by_mode[b][s]["rank"]["kendall_tau"] for s in common]
        boot = (
            _pooled_bootstrap(
                [by_mode[a][s]["rank"]["oneshot_acc"] for s in common],
                [by_mode[b][s]["rank"]["oneshot_acc"] for s in common],
                _scratch_of(by_mode[a].values()),
            )
            if len(common) >= 2
            else None
        )
        text, verdict = _judge(diffs, 1, "τ", 0 if "new" in paper else 1, boot)
        claim = f"{a} shrinking ranks ensembles better than {b} (Kendall τ, pooled over supernet seeds)"
        claims.append([claim, paper, text, verdict])
    return claims


def _retraining_claims(units: dict) -> list[list[str]]:
    """NEAS against each other row after retraining, paired by pipeline seed: top-1, and NLL where
    the paper makes no claim (lower NLL counts as +, so that "better" means NEAS better)."""
    ref, claims = per_seed(units, "k2_diversity"), []
    for prefix, paper, question in (
        ("k2_none", "77.9 vs 77.3 %", "NEAS (diversity) beats no shrinking after retraining"),
        ("k2_accuracy", "77.9 vs 77.2 %", "NEAS (diversity) beats accuracy shrinking after retraining"),
        ("k2_quality", "—", "the similarity matrix matters: diversity vs quality-only shrinking"),
        ("k1", "—", "NEAS beats the best searched single network at the same MACs"),
        ("deep", "—", "NEAS beats a deep ensemble of two copies at the same MACs"),
    ):
        other = per_seed(units, prefix)
        common = sorted(set(ref) & set(other))
        diffs = [ref[s]["top1"] - other[s]["top1"] for s in common]
        claims.append([f"{question} (top1)", paper, *_judge(diffs, 100, "pp top-1", 1 if paper != "—" else 0)])
        if paper == "—":  # the paper reports top-1 only
            diffs = [-(ref[s]["nll"] - other[s]["nll"]) for s in common]  # lower is better: NEAS lower = +
            claims.append([f"{question} (nll)", "—", *_judge(diffs, 1, "NLL (NEAS lower = +)", 0)])
    return claims


def _ablation_claims(units: dict) -> list[list[str]]:
    """The paper's ablations on the seed-0 diversity search, paired by retraining seed: heterogeneous
    paths, layer sharing, and K = 2 against K = 3 and 5 under one budget."""
    claims = []
    for which, reference, others, paper, question in (
        (
            "homo-hetero",
            "hetero",
            ("homo_path1", "homo_path2"),
            "80.0 vs 79.4 / 79.6 %",
            "heterogeneous paths beat mirrored ones",
        ),
        (
            "split",
            "shared",
            ("no_sharing_searched",),
            "80.0 vs 78.5 %",
            "sharing beats the best unshared ensemble at equal budget",
        ),
    ):
        rows = _ablation_rows(units, which, reference)
        for other in others:
            common = sorted(set(rows.get(reference, {})) & set(rows.get(other, {})))
            text, verdict = _judge([rows[reference][c]["top1"] - rows[other][c]["top1"] for c in common], 100, "pp", 1)
            claims.append([f"{question}: {reference} − {other}", paper, text, verdict])
    rows = _paths_rows(units)
    for k, paper in ((3, "80.0 vs 79.5 %"), (5, "80.0 vs 78.5 %")):
        common = sorted(set(rows["K = 2"]) & set(rows[f"K = {k}"]))
        text, verdict = _judge([rows["K = 2"][c]["top1"] - rows[f"K = {k}"][c]["top1"] for c in common], 100, "pp", 1)
        claims.append([f"K = 2 beats K = {k} under one budget", paper, text, verdict])
    return claims


def verdicts(units: dict) -> str:
    """Each paper claim and each new question, with the measured paired difference, its CI and
    the verdict it decides: agrees / disagrees (the CI excludes 0) or within noise; borderline
    where a bootstrap bound is within Monte-Carlo error of 0."""
    gaps = [
        u["search"]["supernet_acc"] - u["search"]["random_supernet_acc"]
        for n, u in units.items()
        if u["kind"] == "pipeline" and u.get("search", {}).get("random_supernet_acc") is not None
    ]
    search = "evolution finds better ensembles than random search at equal evaluations (best found)"
    rows = _ranking_claims(units) + _retraining_claims(units) + _ablation_claims(units)
    rows.append([search, "Figure 5", *_judge(gaps, 100, "pp one-shot top-1, over the seed-0 searches", 1)])
    header = ["claim or question", "paper (ImageNet)", "measured difference [95 % CI]", "verdict"]
    return "\n".join(markdown_table(header, rows))


def evolution_vs_random(units: dict) -> str:
    """Paper Figure 5, in numbers: the best one-shot top-1 (search-val) each seed-0 search found,
    evolution against random search with as many evaluations."""
    header = [
        "pipeline (seed 0)",
        "evaluations",
        "best one-shot top-1, evolution (%)",
        "best, random (%)",
        "evolution − random (pp)",
    ]
    rows = []
    for name, u in units.items():
        if (
            u["kind"] == "pipeline"
            and name.endswith("_seed0")
            and u.get("search", {}).get("random_supernet_acc") is not None
        ):
            ev, rnd = u["search"]["supernet_acc"], u["search"]["random_supernet_acc"]
            rows.append(
                [name, u["search"]["evaluations"], f"{100 * ev:.2f}", f"{100 * rnd:.2f}", f"{100 * (ev - rnd):+.2f}"]
            )
    return "\n".join(markdown_table(header, rows))


def status(units: dict) -> str:
    """How far the study is: finished units of each kind, and the time of the last one."""
    planned = study_units()
    done = [n for n in planned if n in units]
    kinds = sorted({u["kind"] for u in planned.values()})
    counts = ", ".join(
        f"{sum(1 for n in done if planned[n]['kind'] == k)}/{sum(1 for u in planned.values() if u['kind'] == k)} {k}"
        for k in kinds
    )
    last = max((u.get("finished", "") for u in units.values()), default="")
    return (
        f"{len(done)} of {len(planned)} units finished ({counts}); the last at {last.replace('T', ' ')}. Rows marked "
        f'"not run yet", or with fewer than 3 × 3 seeds, are partial; the study resumes where it stopped.'
    )


RESULTS_MD = Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md"


def write_tables(results: Path, results_md: Path | None = RESULTS_MD) -> str:
    """Writes every table to ``results/tables.md`` and into docs/RESULTS.md between its
    ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers (the text around them is
    written by hand; the numbers only ever come from here)."""
    units = {name: u for name, u in _load(results).items() if "kind" in u}
    quiet = results / "inputs" / "latency.json"
    QUIET.clear()
    QUIET.update(json.loads(quiet.read_text())["latency_ms"] if quiet.is_file() else {})
    sections = {
        "status": ("Status", status(units)),
        "main": ("Main table: CIFAR-10 final-test, ≤ 1.5M MACs", main_table(units)),
        "differences": ("Paired differences (by pipeline seed)", differences(units)),
        "ranking": ("Ranking: Kendall τ of each shrinking mode's supernet", ranking(units)),
        "diagnostic": ("Supernet-quality diagnostic: before and after the BN fix", diagnostic(units)),
        "paths": ("Number of paths K under one budget (seed-0 searches)", paths_table(units)),
        "homo-hetero": (
            "Heterogeneous vs homogeneous paths (seed-0 diversity search)",
            ablation_table(units, "homo-hetero", "hetero"),
        ),
        "split": ("Layer sharing (seed-0 diversity search)", ablation_table(units, "split", "shared")),
        "evolution": ("Evolution vs random search (seed-0 searches)", evolution_vs_random(units)),
        "wall": ("Wall time", wall_times(units)),
        "verdicts": ("Verdicts", verdicts(units)),
    }
    text = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections.values()) + "\n"
    (results / "tables.md").write_text(text)
    if results_md is not None and results_md.is_file():
        doc = results_md.read_text()
        missing = [name for name in sections if f"<!-- table:{name} -->" not in doc]
        if missing:
            print(
                f"tables.py: {results_md} has no markers for {', '.join(missing)}; those tables are only in tables.md",
                file=sys.stderr,
            )
        for name, (_, body) in sections.items():
            pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
            doc = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), doc)
        results_md.write_text(doc)
    return text


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2] / "docs" / "results" / "study"
    print(write_tables(Path(sys.argv[1]), None) if len(sys.argv) > 1 else write_tables(root))
