"""The run-directory owner: its files' readers, the marker written before the lock, the lock file."""

from __future__ import annotations

import os

import pytest

from neas import rundir, runfiles
from neas.config import from_dict
from neas.errors import NeasError
from neas.recipes.retrain import RetrainConfig


def _cfg(out, **kw):
    return from_dict(RetrainConfig, {"arch": "neas-s", "out": str(out), **kw})


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"split": 1, "paths"', "not a readable arch file"),
        ("[1, 2]", "arch file must be a JSON object, got list"),
        ('{"split": 1}', "arch file lacks 'paths'"),
    ],
)
def test_a_damaged_arch_file_is_named_with_what_is_wrong(tmp_path, text, message):
    path = tmp_path / runfiles.ARCH
    path.write_text(text)
    with pytest.raises(NeasError) as caught:
        rundir.read_arch(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_an_evaluation_without_a_top1_is_refused(tmp_path):
    path = tmp_path / runfiles.EVAL
    path.write_text('{"ensemble": {"nll": 0.3}}')
    with pytest.raises(NeasError, match="must hold a number 'top1'"):
        rundir.read_eval(path)


def test_generations_are_read_in_order_and_checked(tmp_path):
    for g in range(3):
        (tmp_path / rundir.generation_file(g)).write_text(f'{{"generation": {g}, "members": []}}')
    assert [r["generation"] for r in rundir.read_generations(tmp_path)] == [0, 1, 2]
    assert len(rundir.read_generations(tmp_path, 2)) == 2
    (tmp_path / rundir.generation_file(1)).write_text('{"members": 3}')
    with pytest.raises(NeasError, match="field 'members' must be a list"):
        rundir.read_generations(tmp_path)


def test_the_marker_is_written_before_the_lock_so_a_kill_between_them_leaves_a_resumable_run(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def killed(run):
        raise KeyboardInterrupt  # killed right after the marker, before the lock

    monkeypatch.setattr(rundir, "_lock", killed)
    with pytest.raises(KeyboardInterrupt):
        rundir.prepare_run_dir(out, False, _cfg(out), "retrain")
    monkeypatch.undo()
    assert (out / rundir.MARKER).is_file()
    with pytest.raises(NeasError, match="already exists: pass --resume"):
        rundir.prepare_run_dir(out, False, _cfg(out), "retrain")
    assert rundir.prepare_run_dir(out, True, _cfg(out, resume=True), "retrain") == out  # --resume takes it over
    rundir.release_run_dir(out)


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path):
    out = tmp_path / "run"
    rundir.prepare_run_dir(out, False, _cfg(out), "retrain")
    rundir.release_run_dir(out)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    os.unlink(out / rundir.LOCK)
    os.symlink(outside, out / rundir.LOCK)
    with pytest.raises(NeasError, match="cannot open the lock file"):
        rundir.prepare_run_dir(out, True, _cfg(out, resume=True), "retrain")
    assert outside.read_text() == "keep me\n"


def test_report_of_a_file_says_it_is_a_file_not_that_the_directory_is_missing(tmp_path, capsys):
    from neas.cli import main

    given = tmp_path / "eval.json"
    given.write_text("{}")
    assert main(["report", str(given)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("neas: error: ")
    assert "is a file, not a run directory" in err
    assert len(err.splitlines()) == 1
