import json

import pytest
from scipy import stats

import neas.recipes.rank as rank_mod
from neas.cli import main
from neas.search.ranking import rank_correlation, tau_difference

from ..helpers import Killed


def test_known_rankings():
    perfect = rank_correlation([0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.6, 0.7, 0.8, 0.9], bootstrap=200)
    assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["spearman_rho"] == pytest.approx(1.0)
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


def test_rank_cli_caches_from_scratch_runs(trained_supernet, tmp_path, capsys, monkeypatch):
    argv = ["rank", "--supernet", str(trained_supernet), "--num-archs", "4", "--scratch-epochs", "1", "--bootstrap", "50",
            "--from-space", str(trained_supernet), "--out", str(tmp_path / "rank")]
    assert main(argv) == 0
    assert "Kendall tau" in capsys.readouterr().out
    result = json.loads((tmp_path / "rank" / "rank.json").read_text())
    entry = result["supernets"][str(trained_supernet)]
    assert entry["kendall_tau"] == pytest.approx(stats.kendalltau(entry["oneshot_acc"], result["scratch_acc"]).statistic)
    assert len(list((tmp_path / "rank" / "scratch").glob("*/eval.json"))) == 4
    assert list((tmp_path / "rank").glob("rank_*.png"))
    assert "Kendall τ" in (tmp_path / "rank" / "rank.md").read_text()
    assert entry["in_shrunk_space"] == [0, 1, 2, 3]  # sampled from that supernet's shrunk space
    calibration = entry["calibration"]  # what the one-shot scores were calibrated and scored on
    for part in ("bn", "score"):
        counts = calibration[f"{part}_classes"]
        assert len(counts) == 10 and max(counts.values()) <= 1.5 * min(counts.values()), counts
        assert sum(counts.values()) == calibration[f"{part}_images"]

    def never(*args, **kwargs):
        raise AssertionError("a from-scratch run was redone")

    monkeypatch.setattr(rank_mod, "retrain", never)
    assert main(argv) == 0  # everything cached
    assert json.loads((tmp_path / "rank" / "rank.json").read_text())["scratch_acc"] == result["scratch_acc"]
    # another rank reuses the from-scratch scores through scratch.json, in a new directory
    reuse = [*argv[:-1], str(tmp_path / "again"), "--scratch", str(tmp_path / "rank" / "scratch.json")]
    assert main(reuse) == 0
    again = json.loads((tmp_path / "again" / "rank.json").read_text())
    assert again["scratch_acc"] == result["scratch_acc"] and again["scratch_reused"] == 4
    assert not (tmp_path / "again" / "scratch").exists()
    capsys.readouterr()  # another recipe's scores are refused, before anything is written
    assert main([*reuse[:-3], str(tmp_path / "other"), "--scratch-epochs", "2", *reuse[-2:]]) == 2
    err = capsys.readouterr().err
    assert "--scratch" in err and "epochs: 1 there, 2 here" in err and not (tmp_path / "other").exists()
    record = json.loads((tmp_path / "rank" / "scratch.json").read_text())
    for broken, message in (({**record, "recipe": {**record["recipe"], "space": {"name": "other"}}}, "another search space"),
                            ({**record, "recipe": []}, "not a scratch.json"),
                            ({**record, "ensembles": [{**record["ensembles"][0], "top1": "nan"}]}, "top1 must be an accuracy")):
        (tmp_path / "broken.json").write_text(json.dumps(broken))
        assert main([*reuse[:-3], str(tmp_path / "other"), "--scratch", str(tmp_path / "broken.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("neas: error: --scratch") and message in err and err.count("\n") == 1, err
    # an unfinished supernet is refused before any from-scratch training
    capsys.readouterr()
    assert main([*argv[:2], str(trained_supernet), str(tmp_path / "nope"), *argv[3:]]) == 2
    assert "not a finished supernet run" in capsys.readouterr().err


def test_rank_resumes_a_from_scratch_run_killed_midway(trained_supernet, tmp_path, monkeypatch, kill_after):
    import neas.recipes.retrain as retrain_mod

    argv = ["rank", "--supernet", str(trained_supernet), "--num-archs", "3", "--scratch-epochs", "2", "--bootstrap", "20",
            "--from-space", str(trained_supernet), "--out", str(tmp_path / "rank")]

    restore = kill_after(retrain_mod, "save_checkpoint", after=3)  # the second scratch run dies after its first epoch
    with pytest.raises(Killed):
        main(argv)
    runs = sorted(p for p in (tmp_path / "rank" / "scratch").iterdir() if p.is_dir())
    done = [p for p in runs if (p / "eval.json").is_file()]
    assert len(runs) == 2 and len(done) == 1
    interrupted = next(p for p in runs if p not in done)
    assert json.loads((interrupted / "state.json").read_text())["epoch"] == 0
    finished_weights = (done[0] / "model.safetensors").read_bytes()
    restore()
    epochs = []
    real_seed = retrain_mod.seed_everything
    monkeypatch.setattr(retrain_mod, "seed_everything", lambda s: (epochs.append(s), real_seed(s)))
    assert main(argv) == 0
    # seeds: one at the start of each run, then cfg.seed * 1000 + 16 * epoch per epoch trained:
    # the interrupted run trains only its second epoch (16), the third run both (0, 16)
    assert epochs == [0, 16, 0, 0, 16]
    assert (done[0] / "model.safetensors").read_bytes() == finished_weights  # the finished run was not redone
    assert len(json.loads((tmp_path / "rank" / "rank.json").read_text())["scratch_acc"]) == 3
