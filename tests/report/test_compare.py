import pytest

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


def _review_record(top1: dict, classes: int | None = 5) -> dict:
    """The new-user review's 2-seed comparison: ECE and latency t intervals reaching below 0."""
    held = {"constraints": {"max_macs": 700000}, "copies": 1}
    per_seed = {
        row: {
            s: {"top1": t, "nll": 1.6, "ece": e, "macs": 5e5, "params": 4e4 + 1e4 * s, "latency_ms": 2.0 + 5 * s}
            | {
                "classes": classes,
                "held_to": {**held, "copies": 2, "constraints": {"max_macs": 350000}} if row == "deep" else held,
            }
            for s, (t, e) in enumerate(zip(values, (0.001, 0.07)))
        }
        for row, values in top1.items()
    }
    what = {"neas": "the NEAS pipeline", "single": "one searched network (K = 1)", "deep": "K copies of one network"}
    return {"config": "c.yaml", "seeds": 2, **budget_statistics(per_seed, what)}


def test_rows_near_chance_are_flagged_first_and_marked_in_the_table():
    from neas.report.compare import near_chance

    record = _review_record({"neas": [0.24, 0.28], "single": [0.19, 0.22], "deep": [0.45, 0.50]})
    assert record["classes"] == 5 and near_chance(record) == (["neas", "single"], pytest.approx(0.28))
    lines = format_table(record).splitlines()
    assert lines[2].startswith(
        "Near chance: neas, single (mean top-1 below 28.0 %, with chance at 20.0 % for 5 classes)"
    )
    assert any(line.startswith("| neas (near chance) | 26.00 ±") for line in lines)
    assert any(line.startswith("| deep | 47.50 ±") for line in lines)
    legend = (
        "- (near chance): a mean top-1 below 28.0 %, less than a tenth of the way from chance (1/5 = 20.0 %) to 100 %"
    )
    assert legend in lines
    unknown = _review_record({"neas": [0.24, 0.28], "single": [0.19, 0.22]}, classes=None)
    assert near_chance(unknown) == ([], None) and "near chance" not in format_table(unknown)


def test_the_legend_says_what_every_row_is_and_the_budget_it_was_held_to():
    text = format_table(_review_record({"neas": [0.5, 0.6], "single": [0.5, 0.5], "deep": [0.4, 0.6]}))
    assert "- neas: the NEAS pipeline; held to ≤ 0.7M MACs" in text
    assert "- single: one searched network (K = 1); held to ≤ 0.7M MACs" in text
    assert "- deep: K copies of one network; each copy ≤ 0.35M MACs, 2 copies: ≤ 0.7M MACs in all" in text


def test_intervals_of_bounded_quantities_stay_within_their_bounds_and_clipped_ends_are_marked():
    import re

    record = _review_record({"neas": [0.9, 0.99], "single": [0.5, 0.6]})
    assert record["rows"]["neas"]["ece"]["lo"] < 0 and record["rows"]["neas"]["top1"]["hi"] > 1  # stored as computed
    rows = [line for line in format_table(record).splitlines() if line.startswith("| neas")]
    cells = rows[0].split(" | ")
    assert cells[1].endswith("94.50 ± 6.36 [37.32, 100.00†]")  # top-1 within [0, 100] %
    assert cells[3].endswith("[0.00†, 47.39]")  # ECE within [0, 100] %
    assert cells[7].startswith("4.50 ± 3.54 [0.00†,")  # latency >= 0
    assert not re.search(r"\[-", rows[0])  # no negative lower bound anywhere in the row
    assert "†: an end of the t interval clipped at its quantity's bound" in format_table(record)


def test_the_html_page_renders_tables_not_markdown(tmp_path):
    import json

    from neas.report.html import build_compare_report

    (tmp_path / "compare.json").write_text(json.dumps(_review_record({"neas": [0.24, 0.28], "single": [0.19, 0.22]})))
    page = build_compare_report(tmp_path).read_text()
    assert page.count("<table>") == 2 and "|---|" not in page and "| neas" not in page
    assert "<td>neas (near chance)</td>" in page and "<th>Δ top-1 (%)</th>" in page
    assert page.index("Undetermined against one searched network") < page.index("<table>")
    assert "class='flag'>⚠ Near chance: neas, single" in page


def test_a_difference_of_proportions_is_shown_within_plus_minus_100_points():
    from neas.report.compare import answer

    record = _review_record({"neas": [0.2, 0.9], "single": [0.8, 0.1]})  # differences -0.6, +0.8: t CI ±9 points
    assert record["differences"]["single"]["top1"]["lo"] < -1  # stored as computed
    line = next(line for line in format_table(record).splitlines() if line.startswith("| single | 2 |"))
    assert line.startswith("| single | 2 | +10.00 [-100.00†, +100.00†] within noise |")
    assert "+10.0 points [-100.0†, +100.0†], 2 seed(s)" in answer(record)[0]
