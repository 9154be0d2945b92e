"""The CIFAR-10 study's driver and table script (experiments/cifar10/, issue 17)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

from neas.stats import ci95

HERE = Path(__file__).resolve().parents[1] / "experiments" / "cifar10"


def _module(name):
    if str(HERE) not in sys.path:  # as when the scripts run from their folder: plan.py beside them
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pipeline(name, top1, nll, seed):
    ens = {"top1": top1, "top5": 0.9, "nll": nll, "ece": 0.05, "brier": 0.4}
    return {
        "unit": name,
        "kind": "pipeline",
        "unit_wall_s": 600.0,
        "config": {"seed": seed},
        "eval": {
            "ensemble": ens,
            "paths": [],
            "diversity": {"disagreement": 0.1, "oracle_top1": 0.8},
            "macs": 1_000_000,
            "paper_flops": 1,
            "params": 50_000,
            "latency_ms": 1.0,
            "images": 10000,
        },
    }


def test_tables_average_retrains_then_seeds_with_t_intervals(tmp_path):
    tables = _module("tables")
    units = {}
    for seed, (a, b) in enumerate([(0.70, 0.66), (0.72, 0.69), (0.69, 0.67)]):
        units[f"k2_diversity_seed{seed}"] = _pipeline(f"k2_diversity_seed{seed}", a, 0.9, seed)
        units[f"k2_diversity_seed{seed}_retrain1"] = _pipeline("r", a + 0.02, 0.9, seed)  # a second retraining seed
        units[f"k2_none_seed{seed}"] = _pipeline(f"k2_none_seed{seed}", b, 1.0, seed)
        deep = _pipeline(f"deep_seed{seed}", b, 1.0, seed)
        units[f"deep_seed{seed}"] = {**deep, "kind": "deep", "record": deep.pop("eval")}
        units[f"deep_seed{seed}_retrain2"] = {**units[f"deep_seed{seed}"], "unit": f"deep_seed{seed}_retrain2"}
    for name, summary in units.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(summary))
    text = tables.write_tables(tmp_path, None)  # never into docs/RESULTS.md
    per_seed = [a + 0.01 for a in (0.70, 0.72, 0.69)]  # the mean of each seed's two retrains
    mean = sum(per_seed) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_seed) / 2)
    lo, hi = stats.t.interval(0.95, 2, loc=mean, scale=sd / math.sqrt(3))
    assert f"{100 * mean:.2f} ± {100 * sd:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" in text
    assert "| 3 × 2/2/2 |" in text
    assert "not run yet" in text
    assert next(line for line in text.splitlines() if line.startswith("| deep ensemble")).split(" | ")[1] == "3 × 2/2/2"
    diffs = [p - b for p, b in zip(per_seed, (0.66, 0.69, 0.67))]
    m, _, dlo, dhi = ci95(diffs)
    assert f"{100 * m:+.2f} [{100 * dlo:+.2f}, {100 * dhi:+.2f}]" in text
    spread = "\n".join(line for line in text.splitlines() if "no spread" not in line)
    assert ("within noise" in spread) == (dlo <= 0 <= dhi)
    nll = next(line for line in text.splitlines() if "a deep ensemble of two copies at the same MACs (nll)" in line)
    assert "+0.10 NLL (NEAS lower = +) no spread (n=3) | within noise" in nll  # 0.1 on each of 3 seeds: no verdict
    # the verdict table: the paper says diversity beats no shrinking, and here the CI excludes 0 on that side
    verdict = next(
        line
        for line in text.splitlines()
        if line.startswith("| NEAS (diversity) beats no shrinking after retraining (top1)")
    )
    assert f"{100 * m:+.2f} pp top-1 [{100 * dlo:+.2f}, {100 * dhi:+.2f}] (n=3)" in verdict
    assert verdict.endswith("| agrees |")
    assert (tmp_path / "tables.md").read_text() == text


def test_the_driver_plans_every_row_with_3_seeds_and_its_dependencies():
    plan = _module("plan")
    units = plan.units()
    pipelines = [n for n, u in units.items() if u["kind"] == "pipeline"]
    assert len(pipelines) == 20
    assert {n.rsplit("_seed", 1)[1] for n in pipelines} == {"0", "1", "2"}
    assert units["k5_diversity_seed0"]["config"]["space"].endswith("space_k5.yaml")
    assert units["split_seed0_retrain1"]["deps"] == ["k2_diversity_seed0", "rank_diversity_seed0"]  # its supernet
    assert {units[f"rank_{m}_seed2"]["mode"] for m in plan.SHRINK_MODES} == set(plan.SHRINK_MODES)
    assert units["deep_seed1"]["deps"] == ["k1half_seed1"]
    assert [units[f"deep_seed1_retrain{r}"]["seed"] for r in (1, 2)] == [
        1110,
        2110,
    ]  # two copies each: 1110+1111, 2110+2111
    assert units["deep_seed1_retrain2"]["deps"] == ["k1half_seed1"]
    assert units["k1_seed2_retrain2"]["deps"] == ["k1_seed2"]
    assert units["k1_seed2_retrain2"]["retrain_seed"] == 2002
    assert units["k1_seed0"]["config"]["space"].endswith("space_k1.yaml")
    assert units["k1half_seed0"]["config"]["search"]["max_macs"] == "0.75M"
    assert units["k2_quality_seed0"]["config"]["supernet"]["shrink"] == "quality"
    study = _module("study")
    assert set(study.sources()) == set(units)  # every unit of the plan is collected from a product command
    # every config is a valid `neas run` config
    from neas.config import from_dict
    from neas.recipes.run import RunConfig, stage_configs

    for name in pipelines:
        stage_configs(from_dict(RunConfig, {**units[name]["config"], "out": "x"}))


@pytest.mark.parametrize("name", ["k2_diversity_seed0", "k2_none_seed0"])
def test_committed_summaries_carry_what_the_tables_need(name):
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "study" / f"{name}.json"
    if not path.is_file():
        pytest.skip("not run yet")
    summary = json.loads(path.read_text())
    assert {"top1", "nll", "ece", "brier"} <= set(summary["eval"]["ensemble"])
    assert summary["arch"]["paths"]
    assert summary["retrain_config"]["data_dir"]
    assert summary["unit_wall_s"] > 0


def _rank_unit(mode, seed, oneshot, scratch):
    rank = {
        "kendall_tau": stats.kendalltau(oneshot, scratch).statistic,
        "kendall_tau_ci95": [0.0, 1.0],
        "spearman_rho": stats.spearmanr(oneshot, scratch).statistic,
        "spearman_rho_ci95": [0.0, 1.0],
        "oneshot_acc": oneshot,
        "in_shrunk_space": list(range(len(oneshot))),
    }
    return {
        "unit": f"rank_{mode}_seed{seed}",
        "kind": "rank",
        "mode": mode,
        "seed": seed,
        "rank": rank,
        "scratch_acc": scratch,
        "unit_wall_s": 60.0,
        "finished": "2026-11-29T06:00:00",
    }


def test_ranking_pools_tau_over_seeds_and_pairs_differences_by_seed(tmp_path):
    import numpy as np

    tables = _module("tables")
    rng = np.random.default_rng(0)
    scratch = rng.uniform(0.5, 0.6, 30).tolist()
    units, taus = {}, {"diversity": [], "none": []}
    for seed in range(3):
        for mode, noise in (("diversity", 0.005), ("none", 0.05)):
            oneshot = (np.asarray(scratch) + rng.normal(0, noise, 30)).tolist()
            units[f"rank_{mode}_seed{seed}"] = _rank_unit(mode, seed, oneshot, scratch)
            taus[mode].append(stats.kendalltau(oneshot, scratch).statistic)
    for name, summary in units.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(summary))
    text = tables.write_tables(tmp_path, None)
    mean, sd, lo, hi = ci95(taus["diversity"])
    assert f"{mean:.3f} ± {sd:.3f} [{lo:.3f}, {hi:.3f}]" in text
    diffs = [a - b for a, b in zip(taus["diversity"], taus["none"])]
    assert f"{np.mean(diffs):+.3f} [" in text
    assert "| diversity − none |" in text
    assert "diversity better" in text  # far less noise: a real difference
    # units compared with other from-scratch scores cannot be paired
    units["rank_none_seed1"]["scratch_acc"] = scratch[::-1]
    (tmp_path / "rank_none_seed1.json").write_text(json.dumps(units["rank_none_seed1"]))
    with pytest.raises(ValueError, match="cannot be paired"):
        tables.write_tables(tmp_path, None)


def test_pooled_bootstrap_equals_scipy_bootstrap_resampling_every_seed_alike():
    import numpy as np

    tables = _module("tables")
    rng = np.random.default_rng(3)
    scratch = np.round(rng.uniform(0.5, 0.6, 30), 3)
    a = [np.round(scratch + rng.normal(0, 0.01, 30), 3) for _ in range(3)]
    b = [np.round(scratch + rng.normal(0, 0.04, 30), 3) for _ in range(3)]

    def statistic(*xs):  # the mean over seeds of τ(a_s, scratch) − τ(b_s, scratch), one resample at a time
        return np.mean([stats.kendalltau(x, xs[-1]).statistic for x in xs[:3]]) - np.mean(
            [stats.kendalltau(x, xs[-1]).statistic for x in xs[3:6]]
        )

    ref = stats.bootstrap(
        (*a, *b, scratch),
        statistic,
        n_resamples=2000,
        paired=True,
        vectorized=False,
        method="percentile",
        rng=np.random.default_rng(5),
    )
    boot = tables._pooled_bootstrap([x.tolist() for x in a], [x.tolist() for x in b], scratch.tolist(), 2000, seed=5)
    assert boot["ci"] == pytest.approx(list(ref.confidence_interval), abs=1e-12)
    assert boot["resamples"] == 2000
    assert (
        tables._pooled_bootstrap(a, None, scratch)["resamples"] >= 10_000
    )  # the tables' own: at least 10,000 resamples


def _boot_with_lower_bound(lower_over_band: float, sign: int = 1) -> dict:
    """A bootstrap CI (``percentile_ci``) of constructed numbers whose bound on the ``sign`` side
    of 0 sits at ``lower_over_band`` times its Monte-Carlo band's half-width from 0."""
    import numpy as np

    from neas.search.ranking import percentile_ci

    values = np.random.default_rng(0).normal(0.0, 0.05, 10_000)
    boot = percentile_ci(values)
    (lo, _), (band, _) = boot["ci"], boot["mc"]
    shifted = values - lo + lower_over_band * (band[1] - band[0]) / 2
    return percentile_ci(sign * shifted)


@pytest.mark.parametrize("where", [0.5, -0.5])
def test_a_bootstrap_bound_within_monte_carlo_error_of_0_is_borderline(where):
    tables = _module("tables")
    diffs = [0.14, 0.15, 0.16]  # a t CI far from 0: only the bootstrap can hold the verdict back
    boot = _boot_with_lower_bound(where)
    (lo, _), (band, _) = boot["ci"], boot["mc"]
    assert band[0] < 0 < band[1]  # the bound's Monte-Carlo band holds 0: the bound ...
    assert (lo > 0) == (where > 0)  # ... excludes 0 (or not) only by the luck of the resamples
    assert tables._judge(diffs, 1, "τ", 1, boot)[1] == "borderline"
    assert tables._judge(diffs, 1, "τ", 0, boot)[1] == "borderline"
    assert tables._judge([-d for d in diffs], 1, "τ", 0, _boot_with_lower_bound(where, -1))[1] == "borderline"


def test_a_bootstrap_bound_clear_of_0_gives_a_verdict():
    tables = _module("tables")
    diffs = [0.14, 0.15, 0.16]
    clear = _boot_with_lower_bound(3.0)  # three half-bands above 0
    assert tables._judge(diffs, 1, "τ", 1, clear)[1] == "agrees"
    assert tables._judge(diffs, 1, "τ", 0, clear)[1] == "better"
    assert tables._judge([-d for d in diffs], 1, "τ", 0, _boot_with_lower_bound(3.0, -1))[1] == "worse"
    assert tables._judge(diffs, 1, "τ", 0, _boot_with_lower_bound(-3.0))[1] == "within noise"  # clearly contains 0
    assert (
        tables._judge([0.1, -0.2, 0.15], 1, "τ", 0, clear)[1] == "within noise"
    )  # the t CI contains 0: the bootstrap cannot help


def test_a_difference_without_spread_over_few_seeds_is_within_noise_in_the_study_tables_too():
    """The study's tables judged ``ci95``'s point interval of equal differences: 2 seeds of +0.02 were
    "better" (audit uncertainty-compare item 4 in neas compare; the tables kept it). Now one rule,
    ``neas.stats.judge_differences``: no interval, and the sign test's verdict."""
    tables = _module("tables")
    text, verdict = tables._judge([0.02, 0.02], 100, "pp", 1)
    assert verdict == "within noise" and "no spread" in text and "nan" not in text
    assert tables._judge([0.02] * 6, 100, "pp", 1)[1] == "agrees"  # six of one sign: the sign test decides
    assert tables._judge([0.02] * 6, 100, "pp", 0, _boot_with_lower_bound(-3.0))[1] == "within noise"  # boot too


def test_ranking_tables_report_borderline_when_the_ensemble_bootstrap_is_within_monte_carlo_error(
    tmp_path, monkeypatch
):
    import numpy as np

    tables = _module("tables")
    rng = np.random.default_rng(0)
    scratch = rng.uniform(0.5, 0.6, 30).tolist()
    for seed in range(3):
        for mode, noise in (("diversity", 0.005), ("none", 0.05)):
            unit = _rank_unit(mode, seed, (np.asarray(scratch) + rng.normal(0, noise, 30)).tolist(), scratch)
            (tmp_path / f"rank_{mode}_seed{seed}.json").write_text(json.dumps(unit))
    # the same units whose difference is clear ("diversity better", the test above), with a constructed
    # ensemble bootstrap
    monkeypatch.setattr(tables, "_pooled_bootstrap", lambda *args, **kwargs: _boot_with_lower_bound(0.5))
    text = tables.write_tables(tmp_path, None)
    row = next(line for line in text.splitlines() if line.startswith("| diversity − none |"))
    assert row.endswith("| borderline |"), row
    verdict = next(
        line for line in text.splitlines() if line.startswith("| diversity shrinking ranks ensembles better than none")
    )
    assert verdict.endswith("| borderline |"), verdict
    assert "Monte-Carlo band" in verdict, verdict


def test_every_bootstrap_of_the_ranking_tables_draws_at_least_10000_resamples(tmp_path, monkeypatch):
    import numpy as np

    tables = _module("tables")
    rng = np.random.default_rng(0)
    scratch = rng.uniform(0.5, 0.6, 30).tolist()
    for seed in range(2):
        for mode in ("diversity", "accuracy"):
            unit = _rank_unit(mode, seed, (np.asarray(scratch) + rng.normal(0, 0.02, 30)).tolist(), scratch)
            (tmp_path / f"rank_{mode}_seed{seed}.json").write_text(json.dumps(unit))
    drawn = []
    real = tables.paired_bootstrap  # what every interval of the tables goes through, directly or by neas.search.ranking
    import neas.search.ranking as ranking

    def spy(arrays, statistic, resamples=ranking.RESAMPLES, seed=0):
        drawn.append(resamples)
        return real(arrays, statistic, resamples, seed)

    monkeypatch.setattr(tables, "paired_bootstrap", spy)
    monkeypatch.setattr(ranking, "paired_bootstrap", spy)
    tables.write_tables(tmp_path, None)
    # per seed: τ/ρ of each mode (4) and Δτ (2); pooled: τ of each mode (2), Δτ in the ranking and the
    # verdict tables (2)
    assert len(drawn) == 10, drawn
    assert min(drawn) >= 10_000, drawn


def test_the_driver_is_neas_compare_rank_and_ablate_calls(tmp_path, monkeypatch):
    study = _module("study")
    monkeypatch.setattr(study, "RUNS", tmp_path)  # where it writes the configs
    monkeypatch.setattr(study, "COMPARE_RUNS", tmp_path / "compare")
    argvs = {name: argv for name, argv, _, _ in study.commands(max_parallel=2)}
    compare = argvs["compare"]
    assert compare[0] == "compare"
    assert compare[compare.index("--rows") + 1] == "neas,none,accuracy,quality,single,deep"
    assert compare[compare.index("--seeds") + 1] == "3" and compare[compare.index("--retrain-seeds") + 1] == "3"
    assert compare[compare.index("--max-parallel") + 1] == "2"
    assert argvs["k5"][argvs["k5"].index("--rows") + 1] == "neas"
    rank = argvs["rank-seed1"]
    assert rank[0] == "rank" and "--scratch" in rank
    assert [a for a in rank if a.endswith("/supernet")] == [
        str(study.COMPARE_RUNS / f"{row}-seed1" / "supernet") for row in ("neas", "none", "accuracy", "quality")
    ]
    assert {argv[:2][1] for name, argv in argvs.items() if argv[0] == "ablate"} == {"homo-hetero", "split"}
    from neas.config import from_dict, load_yaml
    from neas.recipes.run import RunConfig, stage_configs

    for name in ("compare", "k3", "k5"):  # every config the study passes to neas compare is a valid `neas run` config
        config = Path(argvs[name][argvs[name].index("--config") + 1])
        stage_configs(from_dict(RunConfig, {**load_yaml(config), "out": "x"}))


def test_collect_writes_each_finished_units_summary_once(tmp_path, monkeypatch):
    study = _module("study")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(study, "COMPARE_RUNS", tmp_path / "compare")
    run = tmp_path / "compare" / "neas-seed1-retrain2"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 2001\n")
    evaluation = _pipeline("x", 0.7, 0.9, 1)["eval"]
    ev = {"ensemble": evaluation["ensemble"], "anytime": [1, 2], "diversity": evaluation["diversity"]}
    ev.update({f"path{j}": evaluation["ensemble"] for j in range(2)})
    ev.update({k: evaluation[k] for k in ("macs", "paper_flops", "params", "latency_ms", "images")})
    (run / "eval.json").write_text(json.dumps(ev))
    assert study.collect(commit=False) == ["k2_diversity_seed1_retrain2"]
    summary = json.loads((tmp_path / "results" / "k2_diversity_seed1_retrain2.json").read_text())
    assert summary["source"] == "k2_diversity_seed1" and summary["retrain_seed"] == 2001
    assert summary["eval"]["ensemble"]["top1"] == 0.7 and len(summary["eval"]["paths"]) == 2
    assert study.collect(commit=False) == []  # a committed summary is never rewritten
