"""rank.md and the scatter plot of `neas rank`, from a results record (the rank itself runs end to end in
tests/test_robustness.py)."""

from neas.recipes.rank import _table
from neas.report.plots import plot_rank

ENTRY = {
    "kendall_tau": 0.2317,
    "kendall_tau_ci95": [0.014, 0.4409],
    "spearman_rho": 0.33,
    "spearman_rho_ci95": [-0.0001, 0.6],
    "oneshot_acc": [0.4, 0.5, 0.6],
    "in_shrunk_space": [0, 2],
    "shrink": "diversity",
}


def test_rank_md_has_a_row_per_supernet_and_a_row_per_pair():
    results = {
        "archs": 3,
        "scratch_epochs": 2,
        "supernets": {"runs/a": ENTRY, "runs/b": {**ENTRY, "in_shrunk_space_correlation": ENTRY}},
        "differences": {"runs/a - runs/b": {"tau_difference": -0.1234, "ci95": [-0.3, 0.05]}},
    }
    lines = _table(results).splitlines()
    assert lines[0] == "## Ranking: 3 ensembles, from scratch for 2 epochs"
    assert lines[4] == "| runs/a | diversity | 0.232 [0.014, 0.441] | 0.330 [-0.000, 0.600] | 50.00 | 2 / 3 | (all) |"
    assert lines[5].endswith("| 0.232 [0.014, 0.441] |")
    assert lines[-1] == "| runs/a - runs/b | -0.123 [-0.300, +0.050] |"
    assert "τ difference" not in _table({**results, "differences": {}})


def test_the_scatter_plot_is_written(tmp_path):
    path = plot_rank([0.4, 0.5, 0.6], [0.5, 0.55, 0.7], ENTRY, tmp_path / "rank_a.png", "runs/a")
    assert path == tmp_path / "rank_a.png" and path.stat().st_size > 1000
