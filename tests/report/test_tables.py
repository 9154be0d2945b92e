import pytest

from neas.report.tables import diff_cell, markdown_table, stat_cell
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
    d = paired_difference([0.7, 0.8, 0.9], [0.5, 0.6, 0.7])
    assert diff_cell(d, 100, 1).endswith(" better")
    assert diff_cell({**d, "lo": None}, 100, 1) == "+20.0 better"
