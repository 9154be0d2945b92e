import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from neas.cli import main
from neas.errors import NeasError
from neas.executor.command import process_start
from neas.runfiles import COMPARE, COMPARE_CONFIGS, COMPARE_TABLE, EVAL, MARKER, SUMMARY

from ..helpers import Killed, checkpoint_of, tiny_supernet_section

TINY = {  # the digits demo shrunk to seconds a run
    "space": "tiny",
    "data": "digits",
    "seed": 4,
    "device": "cpu",
    "supernet": tiny_supernet_section(epochs=1),
    "search": {"max_macs": "0.7M", "population": 4, "parents": 2, "generations": 1, "mutations": 2, "crossovers": 2},
    "retrain": {"epochs": 1, "batch_size": 64, "eval_every": 1, "holdout": 0.1},
}
NUMBERS = ("top1", "nll", "ece", "macs", "params")  # latency is measured: it differs between two runs


def _config(tmp_path, **search):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, "search": {**TINY["search"], **search}}))
    return path


def _compare(config, out, *flags):
    return main(["compare", "--config", str(config), "--out", str(out), "--executor", "debug", *flags])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    home = tmp_path_factory.mktemp("compare")
    config, out = _config(home), home / "out"
    assert _compare(config, out, "--seeds", "2", "--rows", "neas,single") == 0
    return config, out


def test_compare_runs_every_row_and_seed_as_a_run_directory(compared, capsys):
    _, out = compared
    record = json.loads((out / COMPARE).read_text())
    assert list(record["rows"]) == ["neas", "single"]
    for row, r in record["rows"].items():
        assert sorted(r["seeds"]) == ["4", "5"]  # the config's seed + 0, 1
        for seed in (4, 5):
            run = out / f"{row}-seed{seed}"
            assert (run / MARKER).is_file() and (run / SUMMARY).is_file()
        top1 = [r["seeds"][s]["top1"] for s in ("4", "5")]
        assert r["top1"]["values"] == top1 and r["top1"]["mean"] == pytest.approx(np.mean(top1))
        assert r["top1"]["lo"] <= r["top1"]["mean"] <= r["top1"]["hi"]
    single = json.loads((out / "single-seed4" / "search" / "arch.json").read_text())
    assert len(single["paths"]) == 1  # K = 1
    diff = record["differences"]["single"]["top1"]
    neas, other = (record["rows"][r]["top1"]["values"] for r in ("neas", "single"))
    ci = stats.ttest_rel(neas, other).confidence_interval()  # nan without spread: no firm verdict then
    want = "better" if ci.low > 0 else "worse" if ci.high < 0 else "within noise"
    assert diff["mean"] == pytest.approx(np.mean(np.subtract(neas, other))) and diff["verdict"] == want
    table = (out / COMPARE_TABLE).read_text()
    assert "| NEAS minus |" in table
    # the legend: what each row is and the budget its search was held to (from its arch.json); the classes
    assert record["classes"] == 10 and record["rows"]["single"]["held_to"]["constraints"] == {"max_macs": 700000}
    assert "- single: the best single network (K = 1) at the same budget; held to ≤ 0.7M MACs" in table
    page = (out / "report" / "index.html").read_text()
    assert "compare.png" in page and "<th>NEAS minus</th>" in page and "|---|" not in page
    assert (out / "report" / "compare.png").stat().st_size > 1000


def test_a_rerun_skips_finished_jobs(compared, caplog, capsys):
    config, out = compared
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/" + SUMMARY)}
    with caplog.at_level(logging.INFO, logger="neas.executor"):
        assert _compare(config, out, "--seeds", "2", "--rows", "neas,single") == 0
    assert sum("skipped: finished" in r.getMessage() for r in caplog.records) == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/" + SUMMARY)} == before
    assert "| single" in capsys.readouterr().out  # near chance after one epoch: "| single (near chance) |"


def test_numbers_equal_a_direct_neas_run(compared, tmp_path):
    config, out = compared
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "direct")]) == 0
    direct = json.loads((tmp_path / "direct" / "retrain" / EVAL).read_text())
    seed4 = json.loads((out / COMPARE).read_text())["rows"]["neas"]["seeds"]["4"]
    assert {k: seed4[k] for k in NUMBERS} == {k: direct["ensemble"].get(k, direct.get(k)) for k in NUMBERS}


def test_a_rerun_with_other_settings_is_refused(compared, capsys):
    config, out = compared
    assert _compare(config, out, "--seeds", "2", "--rows", "neas") == 2
    assert "rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, search, message",
    [
        (["--seeds", "0"], {}, "seeds must be at least 1, got 0"),
        (["--rows", "neas,singel"], {}, "did you mean 'single'?"),
        (["--executor", "slurm"], {}, "sbatch not found"),
        (["slurm.partiton=gpu"], {}, "did you mean 'partition'?"),
        (["slurm.timeout_min=abc"], {}, "slurm.timeout_min: must be an integer >= 1, got 'abc'"),  # even not on SLURM
        (["--rows", "neas,deep"], {"max_macs": "0.5M"}, "--rows deep (one network at the budget / 2)"),
    ],
    ids=["seeds0", "unknown-row", "slurm-without-sbatch", "slurm-typo", "slurm-value-not-on-slurm", "budget"],
)
def test_bad_input_is_one_line_and_starts_nothing(tmp_path, capsys, monkeypatch, flags, search, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    out = tmp_path / "out"
    assert _compare(_config(tmp_path, **search), out, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("neas: error:") and len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_the_deep_row_is_k_copies_of_a_single_network_searched_at_budget_over_k(tmp_path, capsys):
    out = tmp_path / "out"
    assert _compare(_config(tmp_path), out, "--seeds", "1", "--rows", "neas,deep") == 0
    k1 = yaml.safe_load((out / "deep-k1-seed4" / "config.yaml").read_text())
    assert k1["search"]["max_macs"] == 350_000 and k1["supernet"]["shrink"] == "none"
    ablate = json.loads((out / "deep-seed4" / "ablate.json").read_text())
    single = json.loads((out / "deep-k1-seed4" / "search" / "arch.json").read_text())
    assert ablate["copies"] == 2 and ablate["macs"] == 2 * single["macs"] <= 700_000
    deep = json.loads((out / COMPARE).read_text())["rows"]["deep"]
    assert deep["seeds"]["4"]["top1"] == ablate["ensemble"]["top1"] and deep["top1"]["sd"] is None
    assert "(n=1)" in (out / COMPARE_TABLE).read_text()
    assert deep["held_to"] == {"constraints": {"max_macs": 350000}, "copies": 2}  # from its K = 1 search
    assert "each copy ≤ 0.35M MACs, 2 copies: ≤ 0.7M MACs in all" in (out / COMPARE_TABLE).read_text()


def test_the_deep_rows_copies_are_trained_from_seeds_no_other_seed_of_the_row_uses(tmp_path):
    from neas.recipes.compare import _plan
    from neas.recipes.compare.rows import run_config
    from neas.schemas.compare import CompareConfig

    cfg = CompareConfig(config=str(_config(tmp_path)), out=str(tmp_path / "c"), seeds=3, rows=["neas", "deep"])
    plan = _plan(cfg, run_config(cfg))
    copies = []
    for job in (job for job in plan.second if job.argv[0] == "ablate"):
        config = yaml.safe_load(plan.files[Path(job.argv[job.argv.index("--config") + 1])])
        k = int(job.argv[job.argv.index("--copies") + 1])
        copies.append(set(range(config["seed"], config["seed"] + k)))
    assert len(copies) == 3
    assert all(not (a & b) for i, a in enumerate(copies) for b in copies[i + 1 :])


def test_a_compare_killed_mid_job_resumes_on_the_next_call_with_the_same_numbers(compared, tmp_path, kill_after):
    import neas.train.recipe as training

    config, reference = compared
    out = tmp_path / "out"
    # inside the third job's retraining
    restore = kill_after(training, "save_checkpoint", after=3, when=checkpoint_of("retrain"))
    with pytest.raises(Killed):
        _compare(config, out, "--seeds", "2", "--rows", "neas,single")
    restore()
    finished = [d.name for d in out.iterdir() if (d / SUMMARY).is_file()]
    assert len(finished) == 2  # two jobs done, the third killed after its checkpoint
    assert _compare(config, out, "--seeds", "2", "--rows", "neas,single") == 0
    got, want = (json.loads((d / COMPARE).read_text())["rows"] for d in (out, reference))
    for row in want:
        for seed, numbers in want[row]["seeds"].items():
            assert {k: got[row]["seeds"][seed][k] for k in NUMBERS} == {k: numbers[k] for k in NUMBERS}


def test_one_path_rows_drop_the_configs_cascade_and_the_neas_row_keeps_it(tmp_path):
    from neas.recipes.compare import _plan
    from neas.recipes.compare.rows import run_config
    from neas.schemas.compare import CompareConfig

    config = yaml.safe_load(_config(tmp_path).read_text())
    config["retrain"]["cascade"] = True
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cfg = CompareConfig(
        config=str(tmp_path / "run.yaml"), out=str(tmp_path / "c"), seeds=1, rows=["neas", "single", "deep"]
    )
    plan = _plan(cfg, run_config(cfg))
    written = {  # file names without the seed
        path.name.rsplit("-seed", 1)[0] + path.name.rsplit("-seed", 1)[-1].lstrip("0123456789"): yaml.safe_load(text)
        for path, text in plan.files.items()
        if "-seed" in path.name
    }
    assert written["neas.yaml"]["retrain"]["cascade"] is True
    for name in ("single.yaml", "deep-k1.yaml"):
        assert "cascade" not in written[name]["retrain"], name
    assert not written["deep-retrain.yaml"].get("cascade"), written["deep-retrain.yaml"]


def test_the_search_exit_rule_is_the_cascade_rows_and_the_rows_that_price_no_cascade_drop_it(tmp_path):
    from neas.recipes.compare import _plan
    from neas.recipes.compare.rows import run_config
    from neas.schemas.compare import CompareConfig

    config = yaml.safe_load(_config(tmp_path).read_text())
    config["search"].update(cascade_exit="risk", cascade_tolerance=2)  # for the cascade row; max_macs prices none
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    rows = ["neas", "single", "deep", "cascade"]
    cfg = CompareConfig(config=str(tmp_path / "run.yaml"), out=str(tmp_path / "c"), seeds=1, rows=rows)
    plan = _plan(cfg, run_config(cfg))  # a search refuses an exit rule it does not read: no row may carry one
    written = {path.name: yaml.safe_load(text) for path, text in plan.files.items()}
    assert {k: written["cascade-seed4.yaml"]["search"][k] for k in ("cascade_exit", "cascade_tolerance")} == {
        "cascade_exit": "risk",
        "cascade_tolerance": 2,
    }
    for name in ("neas-seed4.yaml", "single-seed4.yaml", "deep-k1-seed4.yaml"):
        assert not {"cascade_exit", "cascade_tolerance"} & set(written[name]["search"]), name


def test_retrain_seeds_train_each_searched_network_again_and_a_seed_is_their_mean(tmp_path):
    out = tmp_path / "out"
    assert _compare(_config(tmp_path), out, "--seeds", "1", "--retrain-seeds", "2", "--rows", "neas,deep") == 0
    again = yaml.safe_load((out / "neas-seed4-retrain1" / "config.yaml").read_text())
    assert again["seed"] == 1004 and again["arch"] == str(out / "neas-seed4" / "search" / "arch.json")
    own, other = (
        json.loads(p.read_text()) for p in (out / "neas-seed4/retrain" / EVAL, out / "neas-seed4-retrain1" / EVAL)
    )
    record = json.loads((out / COMPARE).read_text())
    seed = record["rows"]["neas"]["seeds"]["4"]
    assert seed["top1"] == pytest.approx((own["ensemble"]["top1"] + other["ensemble"]["top1"]) / 2)
    assert [r["top1"] for r in seed["retrains"]] == [own["ensemble"]["top1"], other["ensemble"]["top1"]]
    copies = json.loads((out / "deep-seed4-retrain1" / "ablate.json").read_text())["members"]
    assert [m["seed"] for m in copies] == [1008, 1009]  # seed * K + 1000 r, then the next copy
    assert "× 2 retraining seeds" in (out / COMPARE_TABLE).read_text()


def test_a_config_with_budgets_is_compared_at_each_budget(tmp_path):
    config = yaml.safe_load(_config(tmp_path).read_text())
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**config, "budgets": ["0.7M", "0.8M"]}))
    out = tmp_path / "out"
    assert _compare(tmp_path / "run.yaml", out, "--seeds", "1", "--rows", "neas,deep") == 0
    record = json.loads((out / COMPARE).read_text())
    assert list(record["budgets"]) == ["0.7M", "0.8M"] and record["budget_metric"] == "macs"
    assert record["rows"] == record["budgets"]["0.8M"]["rows"]  # the largest budget's, as neas run's retrain/
    for text, share in (("0.7M", "350000"), ("0.8M", "400000")):
        deep = json.loads((out / f"deep-seed4-macs_{text}" / "ablate.json").read_text())
        single = json.loads((out / "deep-k1-seed4" / "budgets" / f"macs_{share}" / "arch.json").read_text())
        assert deep["macs"] == 2 * single["macs"] <= 2 * int(share)
        seeds = {row: record["budgets"][text]["rows"][row]["seeds"]["4"] for row in ("neas", "deep")}
        assert seeds["deep"]["top1"] == deep["ensemble"]["top1"]
        assert seeds["deep"]["dir"] == str(out / f"deep-seed4-macs_{text}")
        assert seeds["neas"]["dir"] == str(out / "neas-seed4" / "budgets" / f"macs_{text}")
        neas = read_json_eval(out / "neas-seed4" / "budgets" / f"macs_{text}" / "retrain" / EVAL)
        assert record["budgets"][text]["rows"]["neas"]["seeds"]["4"]["top1"] == neas["ensemble"]["top1"]
    table = (out / COMPARE_TABLE).read_text()
    assert "### macs budget 0.7M" in table and "### macs budget 0.8M" in table


def test_a_latency_budget_cannot_be_split_between_a_deep_ensembles_copies(tmp_path, capsys):
    config = yaml.safe_load(_config(tmp_path).read_text())
    config.update(budgets=["5", "10"], budget_metric="latency_ms")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert _compare(tmp_path / "run.yaml", tmp_path / "out", "--rows", "neas,deep") == 2
    err = capsys.readouterr().err.strip()
    assert err == "neas: error: --rows deep: a latency_ms budget cannot be split between copies; bound MACs instead"
    assert not (tmp_path / "out").exists()


def read_json_eval(path):
    return json.loads(path.read_text())


def _numbers(out: Path) -> dict:
    rows = json.loads((out / COMPARE).read_text())["rows"]
    return {(row, seed): {k: n[k] for k in NUMBERS} for row, r in rows.items() for seed, n in r["seeds"].items()}


def test_a_finished_job_that_lost_or_damaged_a_file_compare_reads_runs_again(compared, caplog):
    config, out = compared  # left as it was: finished, the same numbers (and an eval.json.damaged)
    numbers, evaluation = _numbers(out), out / "neas-seed4" / "retrain" / EVAL
    evaluation.unlink()  # the job's summary.json is still there
    with caplog.at_level(logging.INFO):
        assert _compare(config, out, "--seeds", "2", "--rows", "neas,single") == 0
    assert f"neas-seed4: not finished: {evaluation} missing" in caplog.text
    assert _numbers(out) == numbers
    evaluation.write_text(evaluation.read_text()[:100])  # cut
    assert _compare(config, out, "--seeds", "2", "--rows", "neas,single") == 0
    assert (
        _numbers(out) == numbers and evaluation.with_name(EVAL + ".damaged").read_text() == evaluation.read_text()[:100]
    )


def test_a_damaged_job_config_is_rewritten_from_the_plan_and_one_of_another_plan_refused(tmp_path, caplog, capsys):
    from neas.recipes.compare import _claim, _plan
    from neas.recipes.compare.rows import run_config
    from neas.schemas.compare import CompareConfig

    cfg = CompareConfig(config=str(_config(tmp_path)), out=str(tmp_path / "c"), seeds=1, rows=["neas", "single"])
    _claim(cfg, _plan(cfg, run_config(cfg)))  # what compare writes before its jobs run
    job = tmp_path / "c" / COMPARE_CONFIGS / "neas-seed4.yaml"
    written = job.read_text()
    for damage in (written[: len(written) // 2], written.replace("lr:", "lr: 9 #")):  # cut; edited by hand
        job.write_text(damage)
        with caplog.at_level(logging.WARNING):
            _claim(cfg, _plan(cfg, run_config(cfg)))
        assert job.read_text() == written and f"{job}: damaged or edited since it was written" in caplog.text
    changed = yaml.safe_load((tmp_path / "run.yaml").read_text())
    changed["retrain"]["epochs"] = 2  # --config edited: the finished jobs ran another plan
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(NeasError, match=f"{job}: differs from the config this call would run now \\(was --config"):
        _claim(cfg, _plan(cfg, run_config(cfg)))
    job.write_text("x")  # its header gone too: what it held cannot be told
    with pytest.raises(NeasError, match="damaged, and what it held cannot be told; if --config .* delete it"):
        _claim(cfg, _plan(cfg, run_config(cfg)))


def test_the_jobs_threads_are_the_comparisons_option_not_a_share_of_max_parallel(tmp_path, monkeypatch, capsys):
    import neas.recipes.compare as recipe

    given = []

    def stop(jobs, command, **kw):
        given.append(command.threads)
        raise NeasError("stop here")

    monkeypatch.setattr(recipe, "run_jobs", stop)
    config, out = _config(tmp_path), tmp_path / "out"
    for flags in (["--max-parallel", "1"], ["--max-parallel", "4"], ["--threads-per-job", "3"]):
        _compare(config, out, "--seeds", "1", "--rows", "neas", *flags)
    assert given == [1, 1]  # whatever --max-parallel; the third call was refused before any job
    assert "threads_per_job: 1 -> 3" in capsys.readouterr().err


def test_the_deep_row_splits_a_params_budget_without_max_macs(tmp_path):
    from neas.recipes.compare import _plan
    from neas.recipes.compare.rows import run_config
    from neas.schemas.compare import CompareConfig

    config = yaml.safe_load(_config(tmp_path).read_text())
    config["search"] = {**{k: v for k, v in config["search"].items() if k != "max_macs"}, "max_params": 200_000}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cfg = CompareConfig(config=str(tmp_path / "run.yaml"), out=str(tmp_path / "c"), seeds=1, rows=["neas", "deep"])
    plan = _plan(cfg, run_config(cfg))
    k1 = yaml.safe_load(plan.files[tmp_path / "c" / COMPARE_CONFIGS / "deep-k1-seed4.yaml"])
    assert k1["search"]["max_params"] == 100_000 and "max_macs" not in k1["search"]


def test_a_missing_config_is_refused_before_torch_is_imported(tmp_path):
    script = (
        "import sys; from neas.cli import main; "
        f"status = main(['compare', '--config', {str(tmp_path / 'nope.yaml')!r}, '--out', {str(tmp_path / 'o')!r}]); "
        "print(status, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert done.stdout.split() == ["2", "False"] and "nope.yaml" in done.stderr and "no such file" in done.stderr


def _env() -> dict:
    src = Path(__file__).resolve().parents[2] / "src"
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _descendants(pid: int) -> "list[int]":
    """The processes below ``pid`` (Linux /proc), found by their parent PIDs."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found


def _start_and_stop(argv: "list[str]", ready: Path, how: int) -> "tuple[subprocess.Popen, list[int]]":
    """Starts ``neas compare`` (``argv``), sends it ``how`` once ``ready`` exists; returns it, ended, and
    the processes it had started."""
    compare = subprocess.Popen(argv, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ready.exists():
        assert compare.poll() is None and time.time() < deadline, compare.stderr.read() if compare.poll() else ""
        time.sleep(0.05)
    below = _descendants(compare.pid)
    assert below, "no job process"
    compare.send_signal(how)
    compare.wait(120)
    return compare, below


def _still_running(pids: "list[int]", within: float) -> "list[int]":
    deadline = time.time() + within
    while (alive := [p for p in pids if process_start(p) is not None]) and time.time() < deadline:
        time.sleep(0.1)
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the jobs' processes in /proc")
def test_a_sigterm_and_a_sigkill_of_a_local_compare_leave_no_job_running_and_the_rerun_gets_its_numbers(
    compared, tmp_path
):
    config, reference = compared
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "neas", "compare", "--config", str(config), "--out", str(out)]
    argv += ["--seeds", "1", "--rows", "neas", "--executor", "local"]
    run = out / "neas-seed4"
    compare, below = _start_and_stop(argv, run / "supernet" / MARKER, signal.SIGTERM)  # the job is training
    assert compare.returncode == 143 and "neas: error: interrupted by SIGTERM" in compare.stderr.read()
    assert _still_running(below, 1) == []  # stopped before compare ended
    compare, below = _start_and_stop(argv, run / "search" / MARKER, signal.SIGKILL)  # resumed, searching now
    assert compare.returncode == -signal.SIGKILL and not (run / SUMMARY).exists()
    assert _still_running(below, 15) == []  # the job saw its parent gone (it polls every second)
    assert _compare(config, out, "--seeds", "1", "--rows", "neas") == 0  # the rerun (here, in this process)
    want = {key: n for key, n in _numbers(reference).items() if key == ("neas", "4")}
    assert _numbers(out) == want  # the uninterrupted compare's (one thread per job in both)


def test_the_cascade_row_holds_the_cascades_mean_macs_to_the_budget_and_is_judged_as_the_cascade(tmp_path):
    config, out = _config(tmp_path), tmp_path / "out"
    assert _compare(config, out, "--seeds", "1", "--rows", "cascade,single") == 0
    job = yaml.safe_load((out / COMPARE_CONFIGS / "cascade-seed4.yaml").read_text().split("\n", 1)[1])
    assert job["search"]["max_mean_macs"] == "700000" and "max_macs" not in job["search"]
    record = json.loads((out / COMPARE).read_text())
    assert record["reference"] == "cascade" and list(record["differences"]) == ["single"]
    evaluated = json.loads((out / "cascade-seed4" / "retrain" / EVAL).read_text())
    cascade = record["rows"]["cascade"]["seeds"]["4"]
    for key in ("top1", "nll", "ece", "mean_macs"):  # the cascade's numbers on the test split, not the full ensemble's
        assert cascade[key] == evaluated["cascade"][key]
    assert cascade["macs"] == evaluated["macs"] and cascade["mean_macs"] <= cascade["macs"]
    single = record["rows"]["single"]["seeds"]["4"]
    assert single["mean_macs"] == single["macs"]  # one network runs whole on every image
    table = (out / COMPARE_TABLE).read_text()
    assert "| cascade minus |" in table and "mean MACs (M)" in table


@pytest.mark.parametrize(
    ("search", "space", "message"),
    [
        ({"max_macs": None}, "tiny", "bounds no search.max_macs"),
        ({}, "tiny-k1", "a cascade needs K >= 2"),
    ],
)
def test_a_cascade_row_without_a_mac_budget_or_a_second_path_is_refused(tmp_path, search, space, message):
    body = {**TINY, "search": {k: v for k, v in {**TINY["search"], **search}.items() if v is not None}}
    if space == "tiny-k1":
        from neas.space import SearchSpace

        body["space"] = str(tmp_path / "k1.yaml")
        (tmp_path / "k1.yaml").write_text(SearchSpace.resolve("tiny").to_yaml().replace("num_paths: 2", "num_paths: 1"))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(NeasError, match=message):
        from neas.recipes.compare import _plan
        from neas.recipes.compare.rows import run_config
        from neas.schemas.compare import CompareConfig

        cfg = CompareConfig(config=str(tmp_path / "run.yaml"), out=str(tmp_path / "c"), rows=["cascade", "single"])
        _plan(cfg, run_config(cfg))
