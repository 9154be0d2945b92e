import json
import math

import numpy as np
import pytest
from scipy import stats

import neas.recipes.retrain as retrain_mod
import neas.train.recipe as training
from neas.cli import main
from neas.search.ranking import (
    RESAMPLES,
    kendall_tau,
    mc_band,
    percentile_ci,
    rank_correlation,
    spearman_rho,
    tau_difference,
)

from ..helpers import Killed, checkpoint_of


def test_known_rankings():
    perfect = rank_correlation([0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.6, 0.7, 0.8, 0.9], bootstrap=200)
    assert perfect["kendall_tau"] == pytest.approx(1.0)
    assert perfect["spearman_rho"] == pytest.approx(1.0)
    assert perfect["kendall_tau_ci95"] == pytest.approx([1.0, 1.0])
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1], bootstrap=50)["kendall_tau"] == pytest.approx(-1.0)
    x, y = [0.3, 0.1, 0.5, 0.2, 0.9, 0.7], [0.2, 0.3, 0.6, 0.1, 0.8, 0.5]
    r = rank_correlation(x, y, bootstrap=300)
    assert r["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    lo, hi = r["kendall_tau_ci95"]
    assert -1 <= lo <= r["kendall_tau"] <= hi <= 1


def test_tau_difference_is_paired():
    y = [0.2, 0.3, 0.6, 0.1, 0.8, 0.5, 0.4, 0.7]
    a = [0.25, 0.35, 0.55, 0.1, 0.9, 0.5, 0.45, 0.6]
    b = [0.5, 0.2, 0.3, 0.6, 0.1, 0.4, 0.7, 0.8]
    d = tau_difference(a, b, y, bootstrap=300)
    assert d["tau_difference"] == pytest.approx(stats.kendalltau(a, y).statistic - stats.kendalltau(b, y).statistic)
    assert d["ci95"][0] <= d["tau_difference"] <= d["ci95"][1]
    assert d["ci95"][0] > 0  # a ranks clearly better than b
    assert tau_difference(a, a, y, bootstrap=100)["ci95"] == [0.0, 0.0]  # pairing: identical supernets never differ
    with pytest.raises(ValueError):
        tau_difference(a, b[:-1], y)


def _scores(seed=0, n=30):
    """Constructed scores with ties (rounded), like accuracies on a few thousand images."""
    rng = np.random.default_rng(seed)
    y = np.round(rng.uniform(0.5, 0.6, n), 2)
    return np.round(y + rng.normal(0, 0.02, n), 2), np.round(y + rng.normal(0, 0.05, n), 2), y


def test_vectorised_tau_and_rho_equal_scipy_on_every_resample_with_ties():
    a, _, y = _scores()
    idx = np.random.default_rng(1).integers(0, len(y), (200, len(y)))  # 200 resamples, many ties
    taus, rhos = kendall_tau(a[idx], y[idx]), spearman_rho(a[idx], y[idx])
    assert taus.shape == rhos.shape == (200,)
    for i, j in enumerate(idx):
        assert taus[i] == pytest.approx(stats.kendalltau(a[j], y[j]).statistic, abs=1e-12)  # τ-b, as scipy
        assert rhos[i] == pytest.approx(stats.spearmanr(a[j], y[j]).statistic, abs=1e-12)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # no ranking
    assert math.isnan(spearman_rho([1, 2, 3], [2, 2, 2]))  # no ranking


def test_bootstrap_cis_equal_scipy_bootstrap_with_scipys_own_statistics():
    a, b, y = _scores()
    ref = stats.bootstrap(
        (a, b, y),
        lambda a, b, y: stats.kendalltau(a, y).statistic - stats.kendalltau(b, y).statistic,
        n_resamples=3000,
        paired=True,
        vectorized=False,
        method="percentile",
        rng=np.random.default_rng(7),
    )
    d = tau_difference(a, b, y, 3000, seed=7)
    assert d["ci95"] == pytest.approx(list(ref.confidence_interval), abs=1e-12)
    r = rank_correlation(a, y, 3000, seed=7)
    for key, statistic in (("kendall_tau", stats.kendalltau), ("spearman_rho", stats.spearmanr)):
        ref = stats.bootstrap(
            (a, y),
            lambda a, y: statistic(a, y).statistic,
            n_resamples=3000,
            paired=True,
            vectorized=False,
            method="percentile",
            rng=np.random.default_rng(7),
        )
        assert r[f"{key}_ci95"] == pytest.approx(list(ref.confidence_interval), abs=1e-12), key
    # every interval rests on at least 10,000 resamples unless told otherwise
    assert RESAMPLES >= 10_000
    assert tau_difference(a, b, y)["bootstrap"] == rank_correlation(a, y)["bootstrap"] == RESAMPLES


def test_monte_carlo_band_is_the_bounds_order_statistic_interval_and_its_spread_over_seeds():
    values = np.random.default_rng(0).permutation(np.arange(10_000, dtype=float))  # quantile q sits at 9999 q
    h = 2 * math.sqrt(0.025 * 0.975 / 10_000)
    assert mc_band(values, 0.025) == pytest.approx([9999 * (0.025 - h), 9999 * (0.025 + h)])
    ci = percentile_ci(values)
    assert ci["ci"] == pytest.approx([9999 * 0.025, 9999 * 0.975])
    assert ci["resamples"] == 10_000
    assert ci["mc"][1] == pytest.approx([9999 * (0.975 - h), 9999 * (0.975 + h)])
    assert percentile_ci([float("nan")] * 3)["resamples"] == 0
    # the band is as wide as the bound's spread over bootstrap seeds says: a half-width of about 2 sd
    a, b, y = _scores()
    runs = [tau_difference(a, b, y, seed=s) for s in range(20)]
    sd = np.std([r["ci95"][0] for r in runs], ddof=1)
    half = np.mean([(r["ci95_mc"][0][1] - r["ci95_mc"][0][0]) / 2 for r in runs])
    assert 1 < half / sd < 3, (half, sd)
    assert all(r["ci95_mc"][0][0] <= r["ci95"][0] <= r["ci95_mc"][0][1] for r in runs)


def test_rank_cli_caches_from_scratch_runs(trained_supernet, tmp_path, capsys, monkeypatch):
    argv = [
        "rank",
        "--supernet",
        str(trained_supernet),
        "--num-archs",
        "4",
        "--scratch-epochs",
        "1",
        "--bootstrap",
        "50",
        "--from-space",
        str(trained_supernet),
        "--out",
        str(tmp_path / "rank"),
    ]
    assert main(argv) == 0
    assert "Kendall tau" in capsys.readouterr().out
    result = json.loads((tmp_path / "rank" / "rank.json").read_text())
    entry = result["supernets"][str(trained_supernet)]
    assert entry["kendall_tau"] == pytest.approx(
        stats.kendalltau(entry["oneshot_acc"], result["scratch_acc"]).statistic
    )
    assert len(list((tmp_path / "rank" / "scratch").glob("*/eval.json"))) == 4
    assert list((tmp_path / "rank").glob("rank_*.png"))
    assert "Kendall τ" in (tmp_path / "rank" / "rank.md").read_text()
    assert entry["in_shrunk_space"] == [0, 1, 2, 3]  # sampled from that supernet's shrunk space
    # the from-scratch trainings as local subprocesses, two at once (one thread each, as the suite runs),
    # give the rank.json of the default executor: in this process, one after another
    local = [*argv[:-1], str(tmp_path / "local"), "--executor", "local", "--max-parallel", "2"]
    assert main(local) == 0
    assert json.loads((tmp_path / "local" / "rank.json").read_text()) == result
    assert len(list((tmp_path / "local" / "jobs").glob("*/*_log.err"))) == 4  # each ran in its own process
    capsys.readouterr()
    calibration = entry["calibration"]  # what the one-shot scores were calibrated and scored on
    for part in ("bn", "score"):
        counts = calibration[f"{part}_classes"]
        assert len(counts) == 10, counts
        assert max(counts.values()) <= 1.5 * min(counts.values()), counts
        assert sum(counts.values()) == calibration[f"{part}_images"]

    def never(*args, **kwargs):
        raise AssertionError("a from-scratch run was redone")

    monkeypatch.setattr(retrain_mod, "retrain", never)
    assert main(argv) == 0  # everything cached
    assert json.loads((tmp_path / "rank" / "rank.json").read_text())["scratch_acc"] == result["scratch_acc"]
    # another rank reuses the from-scratch scores through scratch.json, in a new directory
    reuse = [*argv[:-1], str(tmp_path / "again"), "--scratch", str(tmp_path / "rank" / "scratch.json")]
    assert main(reuse) == 0
    again = json.loads((tmp_path / "again" / "rank.json").read_text())
    assert again["scratch_acc"] == result["scratch_acc"]
    assert again["scratch_reused"] == 4
    assert not (tmp_path / "again" / "scratch").exists()
    capsys.readouterr()  # another recipe's scores are refused, before anything is written
    assert main([*reuse[:-3], str(tmp_path / "other"), "--scratch-epochs", "2", *reuse[-2:]]) == 2
    err = capsys.readouterr().err
    assert "--scratch" in err
    assert "epochs: 1 there, 2 here" in err
    assert not (tmp_path / "other").exists()
    record = json.loads((tmp_path / "rank" / "scratch.json").read_text())
    for broken, message in (
        ({**record, "recipe": {**record["recipe"], "space": {"name": "other"}}}, "another search space"),
        ({**record, "recipe": []}, "not a scratch.json"),
        ({**record, "ensembles": [{**record["ensembles"][0], "top1": "nan"}]}, "top1 must be an accuracy"),
    ):
        (tmp_path / "broken.json").write_text(json.dumps(broken))
        assert main([*reuse[:-3], str(tmp_path / "other"), "--scratch", str(tmp_path / "broken.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("neas: error: --scratch"), err
        assert message in err, err
        assert err.count("\n") == 1, err
    # an unfinished supernet is refused before any from-scratch training
    capsys.readouterr()
    assert main([*argv[:2], str(trained_supernet), str(tmp_path / "nope"), *argv[3:]]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and ("not a finished supernet run" in err or "no such file or directory" in err)


def test_rank_resumes_a_from_scratch_run_killed_midway(trained_supernet, tmp_path, monkeypatch, kill_after):
    argv = [
        "rank",
        "--supernet",
        str(trained_supernet),
        "--num-archs",
        "3",
        "--scratch-epochs",
        "2",
        "--bootstrap",
        "20",
        "--from-space",
        str(trained_supernet),
        "--out",
        str(tmp_path / "rank"),
    ]

    # the second scratch run dies after its first epoch
    restore = kill_after(training, "save_checkpoint", after=3, when=checkpoint_of("retrain"))
    with pytest.raises(Killed):
        main(argv)
    runs = sorted(p for p in (tmp_path / "rank" / "scratch").iterdir() if p.is_dir())
    done = [p for p in runs if (p / "eval.json").is_file()]
    assert len(runs) == 2
    assert len(done) == 1
    interrupted = next(p for p in runs if p not in done)
    assert json.loads((interrupted / "state.json").read_text())["epoch"] == 0
    finished_weights = (done[0] / "model.safetensors").read_bytes()
    restore()
    epochs = []
    real_seed = retrain_mod.seed_everything
    for module in (retrain_mod, training):  # the run's initial seed, and the driver's per epoch
        monkeypatch.setattr(module, "seed_everything", lambda s: (epochs.append(s), real_seed(s)))
    assert main(argv) == 0
    # seeds: one at the start of each run (the run seed, 0), then the epoch's (epoch_seed) per epoch trained:
    # the interrupted run trains only its second epoch, the third run both
    from neas.train.loop import epoch_seed

    assert epochs == [0, epoch_seed(0, 1, 0), 0, epoch_seed(0, 0, 0), epoch_seed(0, 1, 0)]
    assert (done[0] / "model.safetensors").read_bytes() == finished_weights  # the finished run was not redone
    assert len(json.loads((tmp_path / "rank" / "rank.json").read_text())["scratch_acc"]) == 3
