from neas.report.compare import DIFFERENCES, budget_statistics, format_table
from neas.stats import ci95

NUMBERS = ("top1", "nll", "ece", "macs", "params", "latency_ms")


def _seeds(top1, nll):
    return {s: {**dict.fromkeys(NUMBERS, 1.0), "top1": t, "nll": n} for s, (t, n) in enumerate(zip(top1, nll), 4)}


def test_compare_statistics_pair_seeds_and_a_lower_nll_is_better():
    per_seed = {
        "neas": _seeds([0.70, 0.72, 0.69], [0.90, 0.92, 0.91]),
        "single": _seeds([0.66, 0.69, 0.67], [1.0, 1.1, 1.05]),
    }
    section = budget_statistics(per_seed, {"neas": "NEAS", "single": "one network"})
    top1 = section["rows"]["neas"]["top1"]
    assert (top1["mean"], top1["sd"], top1["lo"], top1["hi"]) == ci95([0.70, 0.72, 0.69])
    assert top1["values"] == [0.70, 0.72, 0.69] and section["rows"]["single"]["what"] == "one network"
    diffs = section["differences"]["single"]
    assert list(diffs) == list(DIFFERENCES) and diffs["top1"]["seeds"] == [4, 5, 6]
    assert diffs["top1"]["verdict"] == "better" and diffs["nll"]["verdict"] == "better"  # NEAS's NLL is lower


def test_one_seed_has_no_spread_and_a_missing_metric_is_a_dash():
    per_seed = {"neas": _seeds([0.7], [0.9]), "deep": _seeds([0.6], [1.0])}
    per_seed["deep"][4]["latency_ms"] = None  # not measured
    section = budget_statistics(per_seed, {"neas": "", "deep": ""})
    assert section["rows"]["neas"]["top1"]["sd"] is None and "latency_ms" not in section["rows"]["deep"]
    text = format_table({"config": "c.yaml", "seeds": 1, "retrain_seeds": 2, **section})
    first, _, header = text.splitlines()[:3]
    assert first.startswith("Undetermined against deep in top-1: +10.0 points, 1 seed(s), too few to decide")
    assert header.startswith("## neas compare: c.yaml, 1 seed(s) × 2 retraining seeds")
    assert "| neas | 70.00 (n=1) | 0.9000 (n=1) | 100.00 (n=1) | 0.000 (n=1) | - | 0.000 (n=1) | 1.00 (n=1) |" in text
    assert "| deep | 1 | +10.00 within noise | -0.1000 within noise | +0.00 within noise |" in text
    assert next(line for line in text.splitlines() if line.startswith("| deep | 60.00")).endswith("| - |")  # latency


def test_with_budgets_each_budget_has_its_tables():
    section = budget_statistics({"neas": _seeds([0.7, 0.8], [0.9, 0.8])}, {"neas": ""})
    record = {"config": "c.yaml", "seeds": 2, "budget_metric": "macs", "budgets": {"1M": section, "2M": section}}
    text = format_table({**record, **section})
    assert "### macs budget 1M" in text and "### macs budget 2M" in text and "NEAS minus" not in text


def _record(diff: dict) -> dict:
    rows = {"neas": {"what": "NEAS"}, "single": {"what": "one searched network (K = 1)"}}
    return {"config": "c.yaml", "seeds": diff["n"], "rows": rows, "differences": {"single": {"top1": diff}}}


def test_compare_md_starts_with_the_answer_and_two_seeds_are_undetermined():
    from neas.report.compare import answer

    two = _record({"mean": 0.055, "sd": 0.05, "lo": -0.39, "hi": 0.50, "n": 2, "verdict": "within noise"})
    assert answer(two)[0] == (
        "Undetermined against one searched network (K = 1) in top-1: +5.5 points [-39.0, +50.0], 2 seed(s), "
        "too few to decide; run --seeds 5."
    )
    # even a firm-looking verdict from 2 seeds is undetermined
    assert answer(_record({"mean": 0.1, "sd": 0.01, "lo": 0.01, "hi": 0.19, "n": 2, "verdict": "better"}))[
        0
    ].startswith("Undetermined")
    five = _record({"mean": 0.02, "sd": 0.004, "lo": 0.01, "hi": 0.03, "n": 5, "verdict": "better"})
    assert answer(five) == [
        "The searched ensemble is better than one searched network (K = 1) in top-1: +2.0 points [+1.0, +3.0], "
        "5 seed(s)."
    ]
    wide = _record({"mean": 0.01, "sd": 0.05, "lo": -0.05, "hi": 0.07, "n": 5, "verdict": "within noise"})
    assert "the interval is wider than the effect; run --seeds 98" in answer(wide)[0]
