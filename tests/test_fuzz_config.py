"""Fuzzed configs, overrides and flags (issue 30): every bad input ends as one ``neas: error:``
line naming what was wrong, exit status 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

from neas import fields
from neas.cli import main
from neas.config import resolve_config
from neas.recipes.train_supernet import SupernetConfig

from .helpers import BILLION_LAUGHS


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


def _refused(capsys, monkeypatch, tmp_path, argv, *fragments) -> str:
    """Runs ``neas argv`` (with ``--out <cwd>/run`` unless given) in an empty directory: one error line, and
    nothing written there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = [] if "--out" in argv else ["--out", str(cwd / "run")]
    err = _one_error_line(capsys, main([*argv, *out]), *fragments)
    _nothing_written(cwd)
    return err


def test_a_duplicate_yaml_key_is_refused_naming_the_key_and_the_file(tmp_path, monkeypatch, capsys):
    config = tmp_path / "dup.yaml"
    config.write_text("space: tiny\nepochs: 1\nspace: cifar\n")
    argv = ["train-supernet", "--config", str(config)]
    _refused(capsys, monkeypatch, tmp_path, argv, str(config), "line 3", "duplicate key 'space'")


def test_a_duplicate_key_in_an_override_is_refused_naming_the_override(tmp_path, monkeypatch, capsys):
    argv = ["train-supernet", "epochs={a: 1, a: 2}"]
    _refused(capsys, monkeypatch, tmp_path, argv, "override 'epochs={a: 1, a: 2}'", "duplicate key 'a'")


def test_a_yaml_alias_bomb_is_refused_in_one_short_line_before_anything_is_built(tmp_path, monkeypatch, capsys):
    """Refused from the node graph, memoised: a bounded number of size checks and no document built
    (evidence that does not depend on how fast the machine is)."""
    config = tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS)
    checks = []
    counted = fields._expanded_size

    def count(node, sizes, mark):
        checks.append(node)
        return counted(node, sizes, mark)

    def never(self, node):
        raise AssertionError("the bomb's document was constructed")

    monkeypatch.setattr(fields, "_expanded_size", count)
    monkeypatch.setattr(fields._Loader, "construct_document", never)
    err = _refused(capsys, monkeypatch, tmp_path, ["train-supernet", "--config", str(config)], "alias bomb")
    assert len(checks) < 10 * BILLION_LAUGHS.count("*"), len(checks)
    assert len(err) < 300, err


def test_a_long_value_is_cut_short_in_the_error_line(tmp_path, monkeypatch, capsys):
    err = _refused(capsys, monkeypatch, tmp_path, ["train-supernet", "epochs=" + "x" * 100_000])
    assert len(err) < 1200, len(err)


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("epochs=!!python/object:os.system", ["override 'epochs=!!python/object:os.system'", "python/object"]),
        ("epochs=[1,", ["override 'epochs=[1,'", "malformed YAML"]),
        ("download=off", ["download: expected true or false, got 'off'"]),
    ],
)
def test_a_malformed_or_tagged_override_is_one_line_naming_the_override(
    tmp_path, monkeypatch, capsys, override, fragments
):
    _refused(capsys, monkeypatch, tmp_path, ["train-supernet", override], *fragments)


def test_override_booleans_are_yaml_1_2_so_off_no_yes_on_stay_strings():
    for word in ("off", "no", "yes", "on", "Off"):
        assert resolve_config(SupernetConfig, None, {}, [f"data_dir={word}"]).data_dir == word
    assert resolve_config(SupernetConfig, None, {}, ["download=true"]).download is True
    assert resolve_config(SupernetConfig, None, {}, ["download=False"]).download is False


def test_an_override_is_blamed_for_its_own_error_not_the_config_file(tmp_path, monkeypatch, capsys):
    err = _refused(capsys, monkeypatch, tmp_path, ["run", "retrain=5"], "retrain:", "(in override 'retrain=5')")
    assert "demo.yaml" not in err, err


@pytest.mark.parametrize("budget", [".inf", ".nan", "-.inf"])
def test_an_infinite_or_nan_budget_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys, budget):
    config = tmp_path / "search.yaml"
    config.write_text(f"max_macs: {budget}\n")
    _refused(capsys, monkeypatch, tmp_path, ["search", "--config", str(config)], "max_macs:", "finite number")


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train-supernet", "--out", ""], ["out: an empty path"]),
        (["train-supernet", 'out=""'], ["out: an empty path", "(in override 'out=\"\"')"]),
        (["train-supernet", "holdout=1e-300"], ["holdout must be at least 0.01", "1e-300"]),
        (["retrain", "--arch", "a", "--holdout", "0.001"], ["holdout must be 0 or at least 0.01"]),
        (["train-supernet", "--warmup-epochs", "100", "--epochs", "1"], ["warmup_epochs (100) must be less than"]),
        (["retrain", "--arch", "a", "--warmup-epochs", "5", "--epochs", "5"], ["warmup_epochs (5) must be less than"]),
    ],
)
def test_an_empty_out_a_vanishing_holdout_or_a_warmup_past_the_epochs_is_refused(
    tmp_path, monkeypatch, capsys, argv, fragments
):
    _refused(capsys, monkeypatch, tmp_path, argv, *fragments)


def test_the_parser_and_the_top_level_help_import_no_torch():
    code = "import sys, neas.cli; neas.cli.build_parser(); print(sorted({'torch', 'timm', 'pymoo'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    code = "import runpy, sys; sys.argv = ['neas', '--help']\ntry: runpy.run_module('neas', run_name='__main__')\n"
    code += "except SystemExit: print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), out


def test_a_command_help_still_lists_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["train-supernet", "--help"])
    assert "--warmup-epochs" in capsys.readouterr().out
