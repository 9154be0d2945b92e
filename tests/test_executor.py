"""neas.executor: skipping finished jobs, --resume of killed ones, the local executor's throttle and
shares, one error for failed jobs, the SLURM submission (with a stand-in sbatch) and its requeue.

Most jobs call :func:`fake_main` (a stand-in for ``neas.cli.main``, so no test depends on a recipe);
two run the real CLI."""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import neas.executor as executor_module
from neas.errors import NeasError
from neas.executor import Job, NeasCommand, _slurm_executor, run_jobs
from neas.runfiles import MARKER

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "src")])  # a job's process imports this module and this neas
FAKE = f"{__name__}:fake_main"


def fake_main(argv: "list[str]") -> int:
    """``ACTION OUT [SECONDS | N HOLD] [--resume]``: records its argv, environment and time span in OUT, appends
    OUT's name to ``order.txt`` beside it, writes ``done.json`` unless ACTION is ``fail``."""
    action, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    start, met = time.time(), None
    if action == "sleep":
        time.sleep(float(argv[2]))
    if action == "hold":  # say who runs it (this process and its parent, the submitit controller), then stay
        (out / "pids.json").write_text(json.dumps([os.getpid(), os.getppid()]))
        time.sleep(120)
    if action == "meet":  # wait (up to a minute) until N jobs of the folder have arrived: proof they ran at once
        (out.parent / f"{out.name}.arrived").touch()
        deadline = time.time() + 60
        while not (met := len(list(out.parent.glob("*.arrived"))) >= int(argv[2])) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(float(argv[3]))  # then stay: jobs a broken throttle let in too would overlap this one
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    env["torch_threads"] = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
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


def _local(jobs, tmp_path, **kw):
    return run_jobs(jobs, executor="local", log_dir=tmp_path / "logs", progress=False, command=NeasCommand(FAKE), **kw)


def _debug(jobs, tmp_path, **kw):
    return run_jobs(jobs, executor="debug", log_dir=tmp_path / "logs", progress=False, command=NeasCommand(FAKE), **kw)


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
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)  # the jobs' processes import this module
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # nothing here uses CUDA: the variable is only handed on
    # each job waits until two have arrived: the first two can only finish by running at once (no timing
    # needed for the overlap: a loaded machine cannot fail it), and the throttle keeps the others out
    # until one of them has ended (a broken throttle lets a third in while the first two hold for 1 s)
    jobs = [_job(tmp_path, f"j{i}", "meet", "2", "1") for i in range(4)]
    results = _local(jobs, tmp_path, max_parallel=2)
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
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,MIG-bbbb")  # only handed on
    jobs = [_job(tmp_path, f"u{i}") for i in range(2)]
    _local(jobs, tmp_path, max_parallel=2)
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
        run_jobs([_job(tmp_path, "a")], log_dir=tmp_path / "logs", progress=False, command=NeasCommand(FAKE), **kw)
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


def _fake_slurm(tmp_path: Path, monkeypatch, tools=("sbatch", "srun", "sacct")) -> Path:
    """``sbatch``, ``srun`` and ``sacct`` stand-ins on PATH (only ``tools``, and nothing else of the
    PATH: no real SLURM tool gets in); sbatch keeps a copy of the script it is given, sacct prints
    nothing SLURM would (accounting off)."""
    bin_dir, copy = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" {copy}\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 1\n",
        "sacct": "#!/bin/sh\necho garbage\n",
    }
    for tool in tools:
        (bin_dir / tool).write_text(scripts[tool])
        (bin_dir / tool).chmod(0o755)
    for tool in ("sh", "cp", "echo"):  # what the stand-ins use
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
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


def test_jobs_get_the_threads_they_are_given_whatever_max_parallel(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)
    _local([_job(tmp_path, "a")], tmp_path, max_parallel=2)
    assert _record(tmp_path, "a")["env"]["OMP_NUM_THREADS"] == "1"  # no threads given: 1, never cores // max_parallel
    local = [_job(tmp_path, f"l{i}") for i in range(2)]
    run_jobs(local, "local", 2, log_dir=tmp_path / "logs", progress=False, command=NeasCommand(FAKE, threads=3))
    debug = [_job(tmp_path, "d")]
    run_jobs(debug, "debug", 2, log_dir=tmp_path / "logs", progress=False, command=NeasCommand(FAKE, threads=2))
    assert [_record(tmp_path, job.name)["env"]["OMP_NUM_THREADS"] for job in (*local, *debug)] == ["3", "3", "2"]
    assert [_record(tmp_path, job.name)["env"]["torch_threads"] for job in (*local, *debug)] == [3, 3, 2]
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # a debug job's are restored


def _runner(tmp_path: Path) -> "subprocess.Popen":
    """A process that runs one local job which stays (``hold``) until it is stopped; returns once the
    job has said who runs it."""
    script = (
        "from neas.executor import Job, NeasCommand, run_jobs; from pathlib import Path; "
        f"out = Path({str(tmp_path / 'a')!r}); "
        f"run_jobs([Job('a', ['hold', out], out, 'done.json')], 'local', log_dir={str(tmp_path / 'logs')!r}, "
        f"progress=False, command=NeasCommand({FAKE!r}))"
    )
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    runner = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "a" / "pids.json").is_file():
        assert runner.poll() is None and time.time() < deadline, runner.stderr.read() if runner.poll() else "slow"
        time.sleep(0.1)
    time.sleep(0.2)  # (the file is written, not yet closed)
    return runner


def _running(pids: "list[int]", within: float) -> "list[int]":
    """Those of ``pids`` still running after up to ``within`` seconds (a zombie has ended)."""
    from neas.executor.command import process_start

    deadline = time.time() + within
    while (alive := [p for p in pids if process_start(p) is not None]) and time.time() < deadline:
        time.sleep(0.1)
    return alive


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_local_job_ends_with_the_process_that_runs_it_however_that_ends(tmp_path, how):
    import signal

    runner = _runner(tmp_path)
    pids = json.loads((tmp_path / "a" / "pids.json").read_text())  # the job and its submitit controller
    runner.send_signal(getattr(signal, how))
    runner.wait(60)
    if how != "SIGKILL":  # handled like Ctrl-C: the runner stopped its job before it ended
        assert _running(pids, 0.5) == [] and "KeyboardInterrupt: " + how in runner.stderr.read()
    assert _running(pids, 15) == []  # SIGKILL: the job saw its parent gone (it polls every second)


def test_a_job_whose_directory_another_process_holds_is_waited_for_then_named(tmp_path, monkeypatch):
    monkeypatch.setattr("neas.executor.HELD_WAIT_S", 1.0)
    hold = "import sys, time; from neas.rundir import _lock; from pathlib import Path; _lock(Path(sys.argv[1])); "
    holders = {}
    for name, seconds in (("held", 60), ("freed", 0.3)):
        (tmp_path / name).mkdir()
        script = hold + f"print(flush=True); time.sleep({seconds})"
        holders[name] = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / name)],
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            stdout=subprocess.PIPE,
        )
        holders[name].stdout.readline()  # it holds the lock now
    try:
        results = _debug([_job(tmp_path, "held"), _job(tmp_path, "freed")], tmp_path, check=False)
    finally:
        for process in holders.values():
            process.kill()
            process.wait()
    assert [r.status for r in results] == ["failed", "done"]  # "freed" ran once its holder had ended
    assert f"still in use by PID {holders['held'].pid}, a process this call did not start" in results[0].error
    assert f"kill {holders['held'].pid}" in results[0].error and not (tmp_path / "held" / "record.json").exists()


def test_slurm_without_sacct_is_a_one_line_error_not_an_endless_wait(tmp_path, monkeypatch):
    _fake_slurm(tmp_path, monkeypatch, tools=("sbatch", "srun"))
    with pytest.raises(NeasError, match="--executor slurm: sacct not found on PATH \\(submitit follows"):
        run_jobs([_job(tmp_path, "a")], executor="slurm", log_dir=tmp_path / "logs", progress=False)
    assert not (tmp_path / "submitted.sh").exists()  # nothing submitted


def test_a_slurm_array_whose_state_sacct_never_reports_ends_the_wait_and_logs_each_line_once(
    tmp_path, monkeypatch, capfd, caplog
):
    _fake_slurm(tmp_path, monkeypatch)
    (tmp_path / "bin" / "sacct").write_text(
        "#!/bin/sh\necho 'sacct: error: accounting storage is disabled' >&2\nexit 1\n"
    )
    monkeypatch.setattr("neas.executor.SACCT_WAIT_S", 1.0)
    monkeypatch.setitem(executor_module.POLL_S, "slurm", 0.05)
    with caplog.at_level(logging.INFO), pytest.raises(NeasError) as info:
        run_jobs([_job(tmp_path, "a")], executor="slurm", log_dir=tmp_path / "logs", progress=False)
    message = str(info.value)
    assert message.startswith("--executor slurm: sacct reported no state of job array 4242 in 1 s")
    assert "were not cancelled (squeue -j 4242; scancel 4242)" in message
    printed = "".join(capfd.readouterr())
    assert "Bypassing sacct error" not in printed  # not by submitit's own handlers (on stdout and stderr)
    once = [r for r in caplog.records if "Call #1 - Bypassing sacct error" in r.getMessage()]
    assert len(once) == 1 and once[0].levelname == "WARNING"  # once, by the handlers of this process (the CLI's)


def test_run_rank_and_ablate_jobs_get_their_threads_per_job_option_whatever_max_parallel(tmp_path, monkeypatch, capsys):
    """The audit (uncertainty-compare item 5): a local job's threads were cores // --max-parallel, so the
    numbers of ``neas run`` budgets, ``rank`` and ``ablate`` depended on how many jobs ran at once.
    Now ``--threads-per-job`` (default 1) of every command that fans out jobs; debug jobs keep this
    process's threads, as the command's other stages do."""
    import neas.recipes.run as run_recipe
    from neas.cli import main
    from neas.config import to_dict
    from neas.executor import job_command
    from neas.recipes.ablate.common import job_options
    from neas.rundir import config_differences
    from neas.schemas.ablate import RetrainAblation
    from neas.schemas.rank import RankConfig
    from neas.schemas.retrain import RetrainConfig
    from neas.schemas.run import RunConfig

    assert RunConfig().threads_per_job == RankConfig().threads_per_job == RetrainAblation().threads_per_job == 1
    for argv in (["run"], ["rank", "--supernet", str(tmp_path)], ["ablate", "deep-ensemble", "--arch", "neas-s"]):
        assert main([*argv, "--out", str(tmp_path / "o"), "--threads-per-job", "0"]) == 2  # the flag exists
        assert "threads_per_job must be at least 1, got 0" in capsys.readouterr().err
    assert [job_command(e, 3).threads for e in ("local", "slurm", "debug")] == [3, 3, None]
    ablation = RetrainAblation(executor="local", max_parallel=4, threads_per_job=2)
    assert job_options(ablation)["command"].threads == 2
    given = []
    monkeypatch.setattr(run_recipe, "run_jobs", lambda todo, command, **kw: given.append(command.threads))
    stage = RetrainConfig(arch="neas-s", data="digits", out=str(tmp_path / "b" / "retrain"))
    (tmp_path / "b").mkdir()
    for max_parallel in (1, 4):
        cfg = RunConfig(executor="local", max_parallel=max_parallel, threads_per_job=3)
        run_recipe._run_budget_stages(cfg, tmp_path, {"0.5M": (5e5, {}, stage)})
    assert given == [3, 3]
    (tmp_path / "r").mkdir()  # a run directory started with one thread per job: a resume with 3 is refused
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(to_dict(RunConfig(out=str(tmp_path / "r")))))
    other = RunConfig(out=str(tmp_path / "r"), threads_per_job=3, max_parallel=4)
    assert config_differences(tmp_path / "r", other, run_recipe.NOT_COMPARED) == [("threads_per_job", 1, 3)]
