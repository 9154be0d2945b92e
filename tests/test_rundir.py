"""The run directory: the marker written before the lock, the lock file."""

from __future__ import annotations

import os

import pytest

from neas import rundir
from neas.config import from_dict
from neas.errors import NeasError
from neas.recipes.retrain import RetrainConfig


def _cfg(out, **kw):
    return from_dict(RetrainConfig, {"arch": "neas-s", "out": str(out), **kw})


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
    assert "is a file, not a directory (expected a `neas run` directory)" in err
    assert len(err.splitlines()) == 1
