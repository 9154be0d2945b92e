import pytest

from neas.report.tables import METRICS, ci_cell, diff_cell, interval_cell, markdown_table, stat_cell, values_cell
from neas.stats import ci95, paired_difference


def test_a_markdown_table_has_a_separator_row_per_column_and_escapes_pipes():
    lines = markdown_table(["row", "top-1 (%)"], [["a|b", 1.5], ["c", "-"]])
    assert lines == ["| row | top-1 (%) |", "|---|---|", "| a\\|b | 1.5 |", "| c | - |"]


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        markdown_table(["a", "b", "c"], [["1", "2"]])


def test_a_statistics_cell_scales_and_shows_the_interval_or_n_1():
    mean, sd, lo, hi = ci95([0.5, 0.6, 0.7])
    cell = stat_cell({"mean": mean, "sd": sd, "lo": lo, "hi": hi}, 100, 1)
    assert cell == f"60.0 ± 10.0 [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert stat_cell({"mean": 0.25, "sd": None}, 100, 1) == "25.0 (n=1)"
    assert stat_cell(None) == "-"


def test_a_difference_cell_carries_the_verdict_of_neas_stats():
    d = paired_difference([0.7, 0.8, 0.9], [0.5, 0.61, 0.69])
    assert diff_cell(d, 100, 1).endswith(" better")
    assert diff_cell({**d, "lo": None}, 100, 1) == "+20.0 better"
    same = paired_difference([0.7, 0.8, 0.9], [0.5, 0.6, 0.7])  # no spread over 3 seeds: no interval, no verdict
    assert diff_cell(same, 100, 1) == "+20.0 within noise"


def test_an_empty_cell_is_a_bare_bar():
    assert markdown_table(["model", "seeds", "top-1"], [["k1", "not run yet", ""]])[-1] == "| k1 | not run yet | |"


def test_a_values_cell_is_the_statistics_cell_of_their_t_interval_and_counts_values_without_one():
    xs = [0.5, 0.6, 0.7]
    mean, sd, lo, hi = ci95(xs)
    assert values_cell(xs, 100, 1) == stat_cell({"mean": mean, "sd": sd, "lo": lo, "hi": hi}, 100, 1)
    assert values_cell([0.25], 100, 1) == "25.0 (n=1)"
    assert values_cell([float("nan"), 0.5], 100, 1) == "nan (n=2)"  # no spread to show


def test_an_interval_cell_is_signed_and_drops_a_missing_interval():
    d = paired_difference([0.7, 0.8, 0.9], [0.5, 0.6, 0.75])
    assert interval_cell(d, 100, 2) == f"+{100 * d['mean']:.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]"
    assert interval_cell(paired_difference([0.7], [0.6]), 1, 3) == "+0.100"  # one pair: lo is NaN
    assert diff_cell(d, 100, 2) == f"{interval_cell(d, 100, 2)} {d['verdict']}"
    assert ci_cell(0.2317, [0.014, 0.4409], 3, 2) == "0.232 [0.01, 0.44]"
    assert ci_cell(-0.0341, [-0.2204, 0.1512], 3, 2, signed=True) == "-0.034 [-0.22, +0.15]"


def test_every_metric_says_how_it_is_shown_and_which_way_is_better():
    assert {m: (METRICS[m].scale, METRICS[m].higher_is_better) for m in ("top1", "nll", "macs")} == {
        "top1": (100, True),
        "nll": (1, False),
        "macs": (1e-6, False),
    }


def test_the_tables_import_neither_torch_nor_matplotlib():
    """The CIFAR-10 study's table script and neas compare's tables need only numbers."""
    import subprocess
    import sys

    code = (
        "import sys, neas.report.tables, neas.report.compare; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
