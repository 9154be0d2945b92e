"""neas.executor: skipping finished jobs, --resume of killed ones, the local executor's throttle and
shares, one error for failed jobs, the SLURM submission (with a stand-in sbatch) and its requeue.

Most jobs call :func:`fake_main` (a stand-in for ``neas.cli.main``, so no test depends on a recipe);
two run the real CLI."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from neas.errors import NeasError
from neas.executor import Job, NeasCommand, _slurm_executor, run_jobs
from neas.runfiles import MARKER

ROOT = Path(__file__).resolve().parents[1]
FAKE = f"{__name__}:fake_main"


def fake_main(argv: "list[str]") -> int:
    """``ACTION OUT [SECONDS | N HOLD] [--resume]``: records its argv, environment and time span in OUT, appends
    OUT's name to ``order.txt`` beside it, writes ``done.json`` unless ACTION is ``fail``."""
    action, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    start, met = time.time(), None
    if action == "sleep":
        time.sleep(float(argv[2]))
    if action == "meet":  # wait (up to a minute) until N jobs of the folder have arrived: proof they ran at once
        (out.parent / f"{out.name}.arrived").touch()
        deadline = time.time() + 60
        while not (met := len(list(out.parent.glob("*.arrived"))) >= int(argv[2])) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(float(argv[3]))  # then stay: jobs a broken throttle let in too would overlap this one
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    (out / "record.json").write_text(json.dumps({"argv": argv, "env": env, "span": [start, time.time()], "met": met}))
    with open(out.parent / "order.txt", "a") as f:
        f.write(out.name + "\n")
    if action == "fail":
        print("neas: error: broken on purpose", file=sys.stderr)
        return 2
    (out / "done.json").write_text("{}")
    return 0


def _job(tmp_path: Path, name: str, action: str = "ok", *rest: str, **kw) -> Job:
    return Job(name, [action, str(tmp_path / name), *rest], tmp_path / name, "done.json", **kw)


def _record(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / name / "record.json").read_text())


def _order(tmp_path: Path) -> "list[str]":
    path = tmp_path / "order.txt"
    return path.read_text().split() if path.exists() else []


def _debug(jobs, tmp_path, **kw):
    return run_jobs(jobs, executor="debug", log_dir=tmp_path / "logs", progress=False, target=FAKE, **kw)


def test_debug_runs_the_jobs_in_order_and_records_them(tmp_path):
    jobs = [_job(tmp_path, name) for name in ("c", "a", "b")]
    results = _debug(jobs, tmp_path)
    assert _order(tmp_path) == ["c", "a", "b"]
    assert [(r.name, r.out, r.status) for r in results] == [(j.name, j.out, "done") for j in jobs]
    assert all(r.seconds >= 0 for r in results)


def test_finished_jobs_are_skipped(tmp_path):
    jobs = [_job(tmp_path, name) for name in ("a", "b")]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "done.json").write_text("{}")
    results = _debug(jobs, tmp_path)
    assert _order(tmp_path) == ["b"]
    assert [r.status for r in results] == ["skipped", "done"]
    assert _debug(jobs, tmp_path)[1].status == "skipped"  # a second call runs nothing
    assert _order(tmp_path) == ["b"]


def test_a_killed_run_is_resumed_and_a_fresh_one_is_not(tmp_path):
    for name in ("killed", "rank"):  # started: the marker is there, the done file is not
        (tmp_path / name).mkdir()
        (tmp_path / name / MARKER).write_text("{}")
    (tmp_path / "empty").mkdir()  # no marker: nothing to resume
    jobs = [
        _job(tmp_path, "killed"),
        _job(tmp_path, "empty"),
        _job(tmp_path, "new"),
        _job(tmp_path, "rank", resume=False),
    ]
    _debug(jobs, tmp_path)
    assert _record(tmp_path, "killed")["argv"][-1] == "--resume"
    for name in ("empty", "new", "rank"):
        assert "--resume" not in _record(tmp_path, name)["argv"]


def test_local_runs_at_most_max_parallel_jobs_at_once_with_their_share(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs' processes import this module
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # nothing here uses CUDA: the variable is only handed on
    # each job waits until two have arrived: the first two can only finish by running at once (no timing
    # needed for the overlap: a loaded machine cannot fail it), and the throttle keeps the others out
    # until one of them has ended (a broken throttle lets a third in while the first two hold for 1 s)
    jobs = [_job(tmp_path, f"j{i}", "meet", "2", "1") for i in range(4)]
    results = run_jobs(jobs, executor="local", max_parallel=2, log_dir=tmp_path / "logs", progress=False, target=FAKE)
    assert [r.status for r in results] == ["done"] * 4
    records = [_record(tmp_path, job.name) for job in jobs]
    assert all(r["met"] for r in records)
    events = sorted([(r["span"][1], -1) for r in records] + [(r["span"][0], 1) for r in records])  # ends first
    running = [sum(step for _, step in events[: i + 1]) for i in range(len(events))]
    assert max(running) == 2
    starts, ends = sorted(r["span"][0] for r in records), sorted(r["span"][1] for r in records)
    assert starts[2] >= ends[0]  # the third job started only after one had ended
    cpus = len(os.sched_getaffinity(0))
    assert {r["env"]["OMP_NUM_THREADS"] for r in records} == {str(max(1, cpus // 2))}
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in records} <= {"3", "5"}
    for a in records:  # jobs that overlap have different devices
        for b in records:
            if a is not b and a["span"][0] < b["span"][1] and b["span"][0] < a["span"][1]:
                assert a["env"]["CUDA_VISIBLE_DEVICES"] != b["env"]["CUDA_VISIBLE_DEVICES"]


def test_local_jobs_get_gpus_named_by_uuid_not_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,MIG-bbbb")  # only handed on
    jobs = [_job(tmp_path, f"u{i}") for i in range(2)]
    run_jobs(jobs, executor="local", max_parallel=2, log_dir=tmp_path / "logs", progress=False, target=FAKE)
    assert {_record(tmp_path, job.name)["env"]["CUDA_VISIBLE_DEVICES"] for job in jobs} == {"GPU-aaaa", "MIG-bbbb"}


def test_failed_jobs_let_the_others_finish_then_one_error_names_them(tmp_path):
    jobs = [_job(tmp_path, "bad", "fail"), _job(tmp_path, "good"), _job(tmp_path, "worse", "fail")]
    with pytest.raises(NeasError) as info:
        _debug(jobs, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("2 of 3 jobs failed: bad (run directory ")
    assert f"worse (run directory {tmp_path / 'worse'})" in message
    assert "good" not in message and "exited with status 2" in message and "_log.err" in message
    assert _order(tmp_path) == ["bad", "good", "worse"]
    results = _debug(jobs, tmp_path, check=False)  # "good" is finished now
    assert [r.status for r in results] == ["failed", "skipped", "failed"]


def test_the_real_cli_locally_a_failure_quotes_its_error_and_names_its_log(tmp_path):
    jobs = [Job("help", ["arch", "--help"], tmp_path / "help"), Job("typo", ["bogus"], tmp_path / "typo")]
    with pytest.raises(NeasError) as info:
        run_jobs(jobs, executor="local", max_parallel=2, log_dir=tmp_path / "logs", progress=False)
    message = str(info.value)
    assert message.startswith(f"1 of 2 jobs failed: typo (run directory {tmp_path / 'typo'}): unknown command")
    log = Path(message.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and log.name.endswith("_log.err") and "unknown command 'bogus'" in log.read_text()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"executor": "lokal"}, "choose one of local, slurm, debug \\(did you mean 'local'\\?\\)"),
        ({"max_parallel": 0}, "--max-parallel must be an integer >= 1, got 0"),
        ({"executor": "slurm", "slurm": {"partion": "gpu"}}, "slurm option 'partion' is unknown \\(did you mean"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, kw, match):
    with pytest.raises(NeasError, match=match):
        run_jobs([_job(tmp_path, "a")], log_dir=tmp_path / "logs", progress=False, target=FAKE, **kw)
    assert not (tmp_path / "a").exists()


def test_jobs_may_not_share_a_name_or_a_run_directory(tmp_path):
    with pytest.raises(NeasError, match="two jobs are named 'a'"):
        _debug([_job(tmp_path, "a"), _job(tmp_path, "a")], tmp_path)
    with pytest.raises(NeasError, match="jobs 'a' and 'b' share the run directory"):
        _debug([_job(tmp_path, "a"), Job("b", ["ok", "x"], tmp_path / "a")], tmp_path)


def test_a_missing_submitit_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(NeasError, match="--executor debug: submitit is not installed"):
        _debug([_job(tmp_path, "a")], tmp_path)


def test_slurm_without_sbatch_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NeasError, match="--executor slurm: sbatch not found on PATH"):
        run_jobs([_job(tmp_path, "a")], executor="slurm", log_dir=tmp_path / "logs", progress=False)


def _fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """``sbatch`` and ``srun`` stand-ins on PATH; sbatch keeps a copy of the script it is given."""
    bin_dir, copy = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {copy}\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return copy


def test_slurm_submits_one_array_with_the_given_options(tmp_path, monkeypatch):
    copy = _fake_slurm(tmp_path, monkeypatch)
    slurm = {
        "partition": "gpu",
        "gpus_per_node": 2,
        "cpus_per_task": 8,
        "mem_gb": 32,
        "timeout_min": 120,
        "additional_parameters": {"reservation": "neas", "licenses": "scratch"},
    }
    executor = _slurm_executor(tmp_path / "logs", slurm, max_parallel=2)
    sjobs = executor.map_array(NeasCommand(), [["retrain", "--out", f"R/s{i}"] for i in range(3)])
    assert [j.job_id for j in sjobs] == ["4242_0", "4242_1", "4242_2"]
    script = copy.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=120",
        "#SBATCH --array=0-2%2",  # array_parallelism defaults to max_parallel
        "#SBATCH --reservation=neas",
        "#SBATCH --licenses=scratch",
        "export OMP_NUM_THREADS=8",
    ):
        assert line in script.splitlines(), line


def test_slurm_rejects_a_bad_option_value_in_one_line(tmp_path, monkeypatch):
    _fake_slurm(tmp_path, monkeypatch)
    with pytest.raises(NeasError, match="slurm options .*mem"):
        _slurm_executor(tmp_path / "logs", {"mem_gb": "lots"}, max_parallel=1)


def test_a_preempted_job_is_requeued_with_resume():
    from submitit.core.utils import DelayedSubmission

    argv = ["retrain", "--out", "R/s0"]
    requeued = DelayedSubmission(NeasCommand(FAKE), argv)._checkpoint_function()  # what submitit calls on preemption
    assert requeued.args == ([*argv, "--resume"],) and requeued.function.target == FAKE
    again = DelayedSubmission(requeued.function, *requeued.args)._checkpoint_function()
    assert again.args == ([*argv, "--resume"],)  # --resume once, however often it is preempted
