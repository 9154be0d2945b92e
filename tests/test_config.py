"""The schemas: one declaration per option gives YAML keys, flags, overrides and help."""

import argparse

import pytest
import yaml

from neas.cli import build_parser, main
from neas.config import add_options, flat_fields, from_dict, resolve_config, to_dict
from neas.errors import NeasError
from neas.recipes.run import RunConfig
from neas.recipes.search import SearchConfig
from neas.recipes.train_supernet import SupernetConfig


def test_nested_settings_are_spelled_flat_and_round_trip():
    cfg = from_dict(SupernetConfig, {"shrink": "accuracy", "shrink_every": 3, "shrink_beta": 0.5, "epochs": 7})
    assert (cfg.shrink.mode, cfg.shrink.every, cfg.shrink.beta, cfg.epochs) == ("accuracy", 3, 0.5, 7)
    flat = to_dict(cfg)
    assert flat["shrink"] == "accuracy"
    assert flat["shrink_every"] == 3
    assert "every" not in flat
    assert to_dict(from_dict(SupernetConfig, flat)) == flat
    search = from_dict(SearchConfig, {"max_macs": "1.5M", "population": 8, "parents": 2})
    assert search.constraints.max_macs == 1_500_000
    assert search.evolution.population == 8
    assert to_dict(search)["max_macs"] == 1_500_000


@pytest.mark.parametrize(
    "data, message",
    [
        ({"shrink_every": "abc"}, "shrink_every: expected an integer"),
        ({"shrink_evry": 3}, "unknown key 'shrink_evry' (did you mean 'shrink_every'?)"),
        ({"shrink": {"every": 3}}, "shrink: expected a value, got a mapping"),
        ({"shrink_beta": float("nan")}, "shrink_beta must be a finite number >= 0"),
        ({"shrink": "diversty"}, "shrink: unknown 'diversty' (did you mean 'diversity'?)"),
        ({"workers": -1}, "workers must not be negative"),
    ],
)
def test_bad_values_name_the_key_the_user_wrote(data, message):
    with pytest.raises(NeasError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        from_dict(SupernetConfig, data)


def test_precedence_defaults_yaml_flags_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 5, "shrink_every": 2, "lr": 0.3}))
    cfg = resolve_config(SupernetConfig, path, {"epochs": 6, "lr": None}, ["shrink_every=4"])
    assert (cfg.epochs, cfg.shrink.every, cfg.lr, cfg.batch_size) == (
        6,
        4,
        0.3,
        64,
    )  # flag > YAML; override > YAML; default
    run = resolve_config(RunConfig, None, {}, ["supernet.shrink_every=3", "seed=2"])
    assert run.supernet == {"shrink_every": 3}
    assert run.seed == 2
    with pytest.raises(NeasError, match="override 'shrink.every=3': shrink is a value, not a section"):
        resolve_config(SupernetConfig, None, {"shrink": "diversity"}, ["shrink.every=3"])


def test_every_option_is_a_flag_whose_help_shows_its_default():
    parser = argparse.ArgumentParser()
    add_options(parser, SearchConfig)
    actions = {a.dest: a for a in parser._actions}
    for ff in flat_fields(SearchConfig):
        assert ff.key in actions, ff.key
        assert "default:" in actions[ff.key].help, ff.key
    args = parser.parse_args(["--max-macs", "2M", "--split", "0", "1", "--population", "9", "--no-resume"])
    assert (args.max_macs, args.split, args.population, args.resume) == ("2M", [0, 1], 9, False)
    assert args.seed is None  # not given: the YAML's or the default's value stays


def test_every_command_parses_its_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert sub.format_help(), name


def test_cli_errors_are_one_line(capsys):
    assert main(["train-supernet", "--out", "x", "shrink_every=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neas: error: shrink_every: expected an integer")
    assert err.count("\n") == 1
    assert main(["retrain", "--holdout", "1.5"]) == 2
    assert "holdout must be in [0, 1)" in capsys.readouterr().err


def test_every_numeric_option_declares_its_valid_range():
    import typing

    from neas.cli import COMMANDS, _schema
    from neas.cost import Amount

    for name, (_, schema, _, _) in COMMANDS.items():
        for ff in flat_fields(_schema(schema)):
            kinds = set(typing.get_args(ff.hint)) or {ff.hint}
            if kinds & {int, float} and bool not in kinds and Amount not in kinds:  # amounts parse as finite, >= 0
                assert ff.valid, f"{name}: --{ff.key.replace('_', '-')} declares no valid range"
