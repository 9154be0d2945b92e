"""Fuzzed configs, overrides and flags (issue 30): every bad input ends as one ``neas: error:``
line naming what was wrong, exit status 2, nothing written."""

from pathlib import Path

import pytest

from neas.cli import main


def _one_error_line(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("neas: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _nothing_written(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == []


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train-supernet", "--epochs", "1.5"], ["--epochs: expected an integer, got '1.5'"]),
        (["export", "--format", "onnx", "x"], ["neas export:", "required: --out"]),
        (["trian"], ["unknown command 'trian'", "did you mean", "commands: train-supernet"]),
        (["ablate", "splitt"], ["unknown ablation 'splitt'", "did you mean 'split'"]),
        ([], ["required: COMMAND"]),
        (["search", "--bogus", "1"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_argparse_errors_are_one_neas_error_line(tmp_path, monkeypatch, capsys, argv, fragments):
    monkeypatch.chdir(tmp_path)
    _one_error_line(capsys, main(argv), *fragments)
    _nothing_written(tmp_path)


def test_an_abbreviated_flag_is_refused_not_taken_for_the_long_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _one_error_line(capsys, main(["train-supernet", "--epoch", "3"]), "--epoch", "did you mean '--epochs'")
    _nothing_written(tmp_path)
