"""The CIFAR-10 study's driver and table script (experiments/cifar10/, issue 17)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from scipy import stats

HERE = Path(__file__).resolve().parents[1] / "experiments" / "cifar10"


def _module(name):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pipeline(name, top1, nll, seed):
    ens = {"top1": top1, "top5": 0.9, "nll": nll, "ece": 0.05, "brier": 0.4}
    return {"unit": name, "kind": "pipeline", "unit_wall_s": 600.0, "config": {"seed": seed},
            "eval": {"ensemble": ens, "paths": [], "diversity": {"disagreement": 0.1, "oracle_top1": 0.8}, "macs": 1_000_000,
                     "paper_flops": 1, "params": 50_000, "latency_ms": 1.0, "images": 10000}}


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
    assert "| 3 × 2/2/2 |" in text and "not run yet" in text
    assert next(line for line in text.splitlines() if line.startswith("| deep ensemble")).split(" | ")[1] == "3 × 2/2/2"
    diffs = [p - b for p, b in zip(per_seed, (0.66, 0.69, 0.67))]
    m, _, dlo, dhi = tables.ci95(diffs)
    assert f"{100 * m:+.2f} [{100 * dlo:+.2f}, {100 * dhi:+.2f}]" in text
    assert ("within noise" in text) == (dlo <= 0 <= dhi)
    # the verdict table: the paper says diversity beats no shrinking, and here the CI excludes 0 on that side
    verdict = next(line for line in text.splitlines() if line.startswith("| NEAS (diversity) beats no shrinking after retraining (top1)"))
    assert f"{100 * m:+.2f} pp top-1 [{100 * dlo:+.2f}, {100 * dhi:+.2f}] (n=3)" in verdict and verdict.endswith("| agrees |")
    assert (tmp_path / "tables.md").read_text() == text


def test_the_driver_plans_every_row_with_3_seeds_and_its_dependencies():
    study = _module("study")
    units = study.units()
    pipelines = [n for n, u in units.items() if u["kind"] == "pipeline"]
    assert len(pipelines) == 20 and {n.rsplit("_seed", 1)[1] for n in pipelines} == {"0", "1", "2"}
    assert units["k5_diversity_seed0"]["config"]["space"].endswith("space_k5.yaml")
    assert units["split_seed0_retrain1"]["deps"] == ["k2_diversity_seed0", "rank_diversity_seed0"]  # its supernet
    assert {units[f"rank_{m}_seed2"]["mode"] for m in study.SHRINK_MODES} == set(study.SHRINK_MODES)
    assert units["deep_seed1"]["deps"] == ["k1half_seed1"]
    assert [units[f"deep_seed1_retrain{r}"]["seed"] for r in (1, 2)] == [1110, 2110]  # two copies each: 1110+1111, 2110+2111
    assert units["deep_seed1_retrain2"]["deps"] == ["k1half_seed1"]
    assert units["k1_seed2_retrain2"]["deps"] == ["k1_seed2"] and units["k1_seed2_retrain2"]["retrain_seed"] == 2002
    assert units["k1_seed0"]["config"]["space"].endswith("space_k1.yaml")
    assert units["k1half_seed0"]["config"]["search"]["max_macs"] == "0.75M"
    assert units["k2_quality_seed0"]["config"]["supernet"]["shrink"] == "quality"
    # every config is a valid `neas run` config
    from neas.config import from_dict
    from neas.recipes.run import RunConfig

    for name in pipelines:
        from_dict(RunConfig, {**units[name]["config"], "out": "x"}).stages()


@pytest.mark.parametrize("name", ["k2_diversity_seed0", "k2_none_seed0"])
def test_committed_summaries_carry_what_the_tables_need(name):
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "study" / f"{name}.json"
    if not path.is_file():
        pytest.skip("not run yet")
    summary = json.loads(path.read_text())
    assert {"top1", "nll", "ece", "brier"} <= set(summary["eval"]["ensemble"]) and summary["arch"]["paths"]
    assert summary["retrain_config"]["data_dir"] and summary["unit_wall_s"] > 0


def _rank_unit(mode, seed, oneshot, scratch):
    rank = {"kendall_tau": stats.kendalltau(oneshot, scratch).statistic, "kendall_tau_ci95": [0.0, 1.0],
            "spearman_rho": stats.spearmanr(oneshot, scratch).statistic, "spearman_rho_ci95": [0.0, 1.0],
            "oneshot_acc": oneshot, "in_shrunk_space": list(range(len(oneshot)))}
    return {"unit": f"rank_{mode}_seed{seed}", "kind": "rank", "mode": mode, "seed": seed, "rank": rank, "scratch_acc": scratch,
            "unit_wall_s": 60.0, "finished": "2026-11-29T06:00:00"}


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
    mean, sd, lo, hi = tables.ci95(taus["diversity"])
    assert f"{mean:.3f} ± {sd:.3f} [{lo:.3f}, {hi:.3f}]" in text
    diffs = [a - b for a, b in zip(taus["diversity"], taus["none"])]
    assert f"{np.mean(diffs):+.3f} [" in text
    assert "| diversity − none |" in text and "diversity better" in text  # far less noise: a real difference
    # units compared with other from-scratch scores cannot be paired
    units["rank_none_seed1"]["scratch_acc"] = scratch[::-1]
    (tmp_path / "rank_none_seed1.json").write_text(json.dumps(units["rank_none_seed1"]))
    with pytest.raises(ValueError, match="cannot be paired"):
        tables.write_tables(tmp_path, None)
