"""Issue 40, input at the command line (docs/DECISIONS.md): every input of the third fuzz pass
(../shared/reviews/2026-12-fuzz.md §5, §9, §12) that reached the catch-all ``neas: error: unexpected X``
line, hung, or paid for importing torch before a wrong path was named, is one clean error line naming
the file or the field, what was given and what is valid."""

import json
import os

import pytest

from neas.cli import main

DEEP = "[" * 200_000 + "]" * 200_000  # deeper than any recursion limit: json.loads raised RecursionError
HUGE = "1" + "0" * 5000  # more digits than int() converts: yaml's int() raised ValueError


def _one_clean_line(capsys, code: int, fragment: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("neas: error: "), err
    assert "unexpected" not in err and "Traceback" not in err, err  # not the catch-all
    assert fragment in err, err
    return err


def _write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _arch(tmp_path, **fields) -> str:
    arch = {"split": 4, "paths": [["k5e6", "k3e3", "k5e3", "skip"]] * 2}
    return _write(tmp_path / "arch.json", json.dumps({**arch, "space": "tiny", **fields}))


_DETECT = ["--arch", "neas-s", "--recipe", "small", "--epochs", "1", "--workers", "0"]


def _coco(tmp_path, annotations: str) -> list[str]:
    """``neas detect`` on a COCO-format root whose training annotations are ``annotations``."""
    _write(tmp_path / "coco/annotations/instances_train2017.json", annotations)
    (tmp_path / "coco/train2017").mkdir()
    return ["detect", "--data-dir", str(tmp_path / "coco"), "--out", str(tmp_path / "o"), *_DETECT]


def _detect_run(tmp_path) -> str:
    """A detection run directory whose detector.json is nested 200,000 deep."""
    run = tmp_path / "detrun"
    _write(run / "neas-run.json", json.dumps({"kind": "detect", "cwd": str(tmp_path)}))
    _write(run / "detector.json", DEEP)
    return str(run)


# (id, argv from tmp_path, a fragment of the one error line)
CATCH_ALL = [
    (
        "coco-annotations-nested-deep",
        lambda t: _coco(t, DEEP),
        "instances_train2017.json: not a readable COCO annotation file (ValueError: nested too deeply)",
    ),
    ("coco-images-nested-deep", lambda t: _coco(t, '{"images": ' + DEEP + "}"), "annotation file (ValueError: nested"),
    ("detector-json-nested-deep", lambda t: ["evaluate", "--checkpoint", _detect_run(t)], "detector.json: not a"),
    ("arch-file-nested-deep", lambda t: ["arch", _write(t / "a.json", DEEP)], "a.json: malformed arch JSON: nested"),
    (
        "arch-file-5000-digit-integer",
        lambda t: ["retrain", "--arch", _write(t / "a.json", '{"split": ' + HUGE + "}"), "--out", str(t / "o")],
        "a.json: malformed arch JSON: an integer of more than",
    ),
    ("arch-file-num-classes-1e13", lambda t: ["arch", _arch(t, num_classes=10**13)], "in 1..100000, got 10000000"),
    ("arch-num-classes-1e13", lambda t: ["arch", "neas-s", "--num-classes", "10000000000000"], "num_classes must be"),
    *(
        (
            f"yaml-5000-digit-integer-{command}",
            lambda t, command=command, key=key: [
                command,
                "--config",
                _write(t / "c.yaml", f"{key}: {HUGE}\n"),
                "--out",
                str(t / "o"),
                *(["--data-dir", str(t)] if command == "detect" else []),
            ],
            "c.yaml: line 1, column ",
        )
        for command, key in (("retrain", "epochs"), ("run", "seed"), ("detect", "epochs"), ("compare", "seed"))
    ),
    ("yaml-hex-integer", lambda t: ["retrain", "--config", _write(t / "c.yaml", "epochs: 0x1" + "0" * 5000)], "large"),
    ("override-5000-digits", lambda t: ["retrain", "--out", str(t / "o"), f"epochs={HUGE}"], "too large"),
    ("flag-5000-digits", lambda t: ["retrain", "--out", str(t / "o"), "--epochs", HUGE], "5001 digits is too large"),
    ("flag-beyond-int64", lambda t: ["retrain", "--epochs", str(2**70)], "too large for an integer option"),
    ("synth-detection-size-100000", lambda t: ["synth-detection", "--out", str(t / "o"), "--size", "100000"], "4096"),
    (
        "latency-table-num-classes-1e13",
        lambda t: ["latency-table", "--space", "tiny", "--out", str(t / "l.json"), "--num-classes", "10000000000000"],
        "num_classes must be in 1..100000",
    ),
    (
        "latency-table-batch-1e20",
        lambda t: ["latency-table", "--space", "tiny", "--out", str(t / "l.json"), "--batch-size", str(10**20)],
        "batch_size",
    ),
]


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CATCH_ALL], ids=[c[0] for c in CATCH_ALL])
def test_an_input_that_reached_the_catch_all_is_one_line_naming_what_is_wrong(tmp_path, capsys, argv, fragment):
    _one_clean_line(capsys, main(argv(tmp_path)), fragment)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_a_config_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path, capsys):
    """A 100 MB --config (a comment, then ``epochs: [``) parsed for minutes."""
    config = tmp_path / "big.yaml"
    with open(config, "wb") as f:
        f.truncate(100 * 2**20)  # sparse: 100 MB of NUL bytes, never read
    for command in ("retrain", "run", "detect", "compare"):
        argv = [command, "--config", str(config), "--out", str(tmp_path / "o")]
        _one_clean_line(capsys, main(argv), f"{config}: 104857600 bytes is too large for a YAML config")


def test_a_yaml_document_of_too_many_values_is_refused_while_it_is_read(tmp_path, capsys):
    """300,000 list items under the size cap took 16 s to compose before the alias check refused them."""
    config = _write(tmp_path / "c.yaml", "epochs: [" + "1," * 300_000 + "1]\n")
    _one_clean_line(capsys, main(["retrain", "--config", config]), "malformed YAML: more than 20000 values")


def test_show_describes_an_integer_too_long_to_print():
    from neas.errors import show

    assert show(16**5000) == "an integer of about 6021 digits"
    assert os.environ.get("NEAS_DEBUG") is None  # the catch-all is what these tests must not reach
