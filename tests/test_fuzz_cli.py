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


def test_a_config_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    """A 100 MB --config (a comment, then ``epochs: [``) parsed for minutes: run in a subprocess with a
    time limit, so that without the cap this test fails instead of hanging the suite."""
    import subprocess
    import sys

    config = tmp_path / "big.yaml"
    with open(config, "w") as f:  # the fuzz pass's: a 100 MB comment, then an open list (sparse here: fast)
        f.write("# ")
        f.seek(100 * 2**20)
        f.write("x\nepochs: [\n")
    script = (
        "import sys; from neas.cli import main\n"
        "for command in ('retrain', 'run', 'detect', 'compare'):\n"
        f"    print(main([command, '--config', {str(config)!r}, '--out', {str(tmp_path / 'o')!r}]))\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.split() == ["2"] * 4 + ["False"], done.stderr[-2000:]  # compare's too, before torch
    lines = done.stderr.splitlines()
    assert len(lines) == 4 and all(line.startswith("neas: error: ") for line in lines), done.stderr[-2000:]
    assert all(f"{config}: 104857612 bytes is too large for a YAML config" in line for line in lines), lines
    assert not (tmp_path / "o").exists()


def test_a_yaml_document_of_too_many_values_is_refused_while_it_is_read(tmp_path, capsys):
    """300,000 list items under the size cap took 16 s to compose before the alias check refused them."""
    config = _write(tmp_path / "c.yaml", "epochs: [" + "1," * 300_000 + "1]\n")
    _one_clean_line(capsys, main(["retrain", "--config", config]), "malformed YAML: more than 20000 values")


def test_show_describes_an_integer_too_long_to_print():
    from neas.errors import show

    assert show(16**5000) == "an integer of about 6021 digits"
    assert show([1, 16**5000]) == "a list holding an integer too long to print"
    assert os.environ.get("NEAS_DEBUG") is None  # the catch-all is what these tests must not reach


_WRONG_PATHS = """
import sys
from neas.cli import main
cases = [
    (["compare", "--config", "nope.yaml", "--out", "x"], "config: no such file 'nope.yaml'"),
    (["evaluate", "--checkpoint", "nope"], "checkpoint: no such file or directory 'nope'"),
    (["retrain", "--arch", "nope.json", "--out", "x"], "arch: no such file 'nope.json'"),
    (["export", "--checkpoint", "nope", "--format", "onnx", "--out", "x.onnx"], "checkpoint: no such file or"),
    (["detect", "--data-dir", "nope"], "data_dir: no such directory 'nope' (expected COCO-format root"),
    (["detect", "--data-dir", ".", "--backbone-weights", "w.safetensors"], "backbone_weights: no such file"),
    (["evaluate", "--official-checkpoint", "n.pth.tar", "--arch", "neas-s"], "official_checkpoint: no such"),
    (["search", "--supernet", "nope"], "supernet: no such file or directory 'nope'"),
    (["search", "--supernet", "afile", "--latency-table", "nope.json"], "latency_table: no such file"),
    (["retrain", "--data", "cifar10", "--data-dir", "nope"], "data_dir: no such directory 'nope'"),
    (["retrain", "--data", "imagefolder", "--data-dir", "afile"], "'afile' is a file, not a directory"),
    (["retrain", "--data-dir", "."], "data_dir: the digits dataset is bundled with scikit-learn"),
    (["retrain", "--ood-data", "imagefolder", "--ood-data-dir", "nope"], "ood_data_dir: no such directory"),
    (["retrain", "--space", "nope.yaml"], "space: no such file 'nope.yaml'"),
    (["retrain", "--arch", "."], "arch: '.' is a directory, not a file"),
    (["rank", "--supernet", "nope", "--out", "x"], "supernet: no such file or directory 'nope'"),
    (["report", "nope"], "run: no such directory 'nope'"),
    (["carve-test", "nope", "--out", "x"], "src: no such directory 'nope'"),
    (["subimagenet", "--imagenet", "nope", "--out", "x"], "imagenet: no such directory 'nope'"),
    (["ablate", "split", "--arch", "nope.json", "--out", "x"], "arch: no such file 'nope.json'"),
    (["ablate", "paths", "--config", "nope.yaml", "--out", "x"], "config: no such file 'nope.yaml'"),
    (["ablate", "search", "--run", "nope", "--out", "x"], "run: no such directory 'nope'"),
    (["run", "--config", "c.yaml"], "c.yaml: data_dir: no such directory '/nonexistent/imagenet'"),
    (["synth-detection", "--out", "."], ". already exists and is not an empty folder; choose another --out"),
    (["synth-detection", "--out", "afile"], "afile already exists and is not an empty folder"),
]
"""


_RUN_CASES = """
for argv, message in cases:
    assert main(argv) == 2, argv
    print(argv[0], message, file=sys.stderr)
heavy = sorted(m for m in ("torch", "numpy", "timm", "torchvision", "matplotlib") if m in sys.modules)
print("heavy:", heavy)
"""


def _refused_in_a_subprocess(tmp_path, script: str, count: int) -> None:
    """Runs ``script`` (``cases``: argv and the message expected) in a
    fresh interpreter: each case is one clean line with its message, and nothing heavy was imported."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script + _RUN_CASES], capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"
    errors = [line for line in done.stderr.splitlines() if line.startswith("neas: error: ")]
    expected = [line.split(" ", 1)[1] for line in done.stderr.splitlines() if not line.startswith("neas: error: ")]
    assert len(errors) == len(expected) == count, done.stderr
    for error, message in zip(errors, expected):
        assert message in error and "unexpected" not in error, (error, message)


def test_a_wrong_input_path_is_refused_before_torch_is_imported(tmp_path):
    """A missing --checkpoint, --data-dir or --arch file cost 3-6 CPU-seconds of importing torch before
    it was named (fuzz report §12); every command's input paths are now checked by the torch-free schema
    layer (neas.config.check_inputs), each error naming the key, the value and what is expected."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "c.yaml").write_text("data: imagefolder\ndata_dir: /nonexistent/imagenet\n")
    _refused_in_a_subprocess(tmp_path, _WRONG_PATHS, 25)


_RUN_EXISTS = "run directory old already exists: pass --resume to continue it, or choose another --out"
_EXISTING_OUTS = f"""
import sys
from neas.cli import main
cases = [
    (["export", "--format", "timm", "--out", "old"], "--out old already exists; pass --force to write into it"),
    (["export", "--format", "onnx", "--cascade", "--out", "old"], "--out old already exists; pass --force to write"),
    (["export", "--format", "onnx", "--cascade", "--single-file", "--out", "f.onnx"], "--out f.onnx already exists;"),
    (["export", "--format", "onnx", "--out", "f.onnx"], "--out f.onnx already exists; pass --force to overwrite it"),
    (["export", "--format", "onnx", "--checkpoint", "det", "--out", "f.onnx"], "--out f.onnx already exists;"),
    (["export", "--format", "onnx", "--force", "--out", "old"], "--out old is a directory; give a file name"),
    (["latency-table", "--space", "tiny", "--out", "f.onnx"], "--out f.onnx already exists; pass --force"),
    (["retrain", "--out", "old"], "{_RUN_EXISTS}"),
    (["train-supernet", "--out", "old"], "{_RUN_EXISTS}"),
    (["search", "--supernet", "old", "--out", "old"], "{_RUN_EXISTS}"),
    (["run", "--out", "old"], "{_RUN_EXISTS}"),
    (["run", "--out", "f.onnx", "--resume"], "--out f.onnx is a file, not a directory"),
    (["detect", "--data-dir", "old", "--out", "old"], "{_RUN_EXISTS}"),
    (["retrain", "--out", "det", "--resume"], "det is a detect directory, not a retrain one; choose another --out"),
    (["retrain", "--out", "old", "--resume"], "--resume: old is not a neas run directory (no neas-run.json)"),
    (["rank", "--out", "old"], "--out old exists and is not a neas rank directory (no neas-run.json)"),
    (["compare", "--config", "c.yaml", "--out", "det"], "det is a detect directory, not a compare one"),
    (["ablate", "split", "--arch", "neas-s", "--out", "old"], "--out old exists and is not a neas ablate split"),
    (["ablate", "homo-hetero", "--arch", "neas-s", "--out", "old"], "not a neas ablate homo-hetero directory"),
    (["ablate", "deep-ensemble", "--arch", "neas-s", "--out", "old"], "not a neas ablate deep-ensemble directory"),
    (["ablate", "paths", "--config", "c.yaml", "--out", "old"], "not a neas ablate paths directory"),
    (["ablate", "search", "--run", "old", "--out", "old"], "not a neas ablate search directory"),
    (["subimagenet", "--imagenet", "old", "--out", "old"], "old already exists and is not empty; choose another"),
    (["carve-test", "old", "--out", "f.onnx"], "--out f.onnx is a file; choose another --out"),
    (["synth-detection", "--out", "old"], "old already exists and is not an empty folder"),
]
"""


def test_an_existing_out_is_refused_before_torch_is_imported(tmp_path):
    """Refusing an existing --out cost 4-5 CPU-seconds of importing torch (issue 39 item 4; `neas run --out
    OLD` 5.1 s): every command's output is now checked by its torch-free schema (``check_outputs``, the rule
    its recipe applies again when it writes), with the line the recipe says, and torch is never imported."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mine.txt").write_text("keep me")
    (tmp_path / "f.onnx").write_text("keep me")
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "neas-run.json").write_text('{"kind": "detect", "cwd": "/"}')
    (tmp_path / "c.yaml").write_text("space: tiny\n")
    _refused_in_a_subprocess(tmp_path, _EXISTING_OUTS, 25)
    assert (tmp_path / "old" / "mine.txt").read_text() == (tmp_path / "f.onnx").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "det", "f.onnx", "old"]


def test_every_command_with_an_out_checks_it_before_torch():
    """A command added with an ``out`` key must say how an existing one is refused (its schema's
    ``check_outputs``), or `neas NEW --out OLD` would import torch before refusing it."""
    from neas.cli import _schema
    from neas.config import flat_fields
    from neas.recipes import ABLATIONS, COMMANDS

    schemas = [spec[1] for spec in COMMANDS.values()] + [spec[1] for spec in ABLATIONS.values()]
    with_out = [_schema(s) for s in schemas if s and "out" in {ff.key for ff in flat_fields(_schema(s))}]
    assert len(with_out) >= 17
    assert [cls.__name__ for cls in with_out if not hasattr(cls, "check_outputs")] == []


def test_what_a_command_may_write_into_passes_the_early_check(tmp_path):
    """The early check refuses exactly what the command would: a run it may --resume, a directory of its
    own kind that results accumulate in, --force over a file, --dry-run (writes nothing) and `neas run
    --resume` of a directory not there yet all pass."""
    from neas.config import check_outputs
    from neas.errors import NeasError
    from neas.schemas.commands import ExportCommand
    from neas.schemas.rank import RankConfig
    from neas.schemas.retrain import RetrainConfig
    from neas.schemas.run import RunConfig

    for kind in ("retrain", "rank", "run"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "neas-run.json").write_text(json.dumps({"kind": kind, "cwd": str(tmp_path)}))
    (tmp_path / "f.onnx").write_text("x")
    check_outputs(RetrainConfig, {"out": str(tmp_path / "retrain"), "resume": True})
    check_outputs(RankConfig, {"out": str(tmp_path / "rank")})
    check_outputs(ExportCommand, {"out": str(tmp_path / "f.onnx"), "format": "onnx", "force": True})
    check_outputs(RunConfig, {"out": str(tmp_path / "run"), "dry_run": True})
    check_outputs(RunConfig, {"out": str(tmp_path / "run"), "resume": True})
    check_outputs(RunConfig, {"out": str(tmp_path / "new"), "resume": True})
    with pytest.raises(NeasError, match="is a retrain directory, not a rank one"):
        check_outputs(RankConfig, {"out": str(tmp_path / "retrain")})
    with pytest.raises(NeasError, match="already exists: pass --resume"):
        check_outputs(RunConfig, {"out": str(tmp_path / "run")})


def test_a_data_dir_given_to_the_bundled_digits_is_refused_not_ignored(tmp_path):
    """``neas evaluate --data digits --data-dir nope`` was accepted: digits reads no directory."""
    from neas.data import load_dataset
    from neas.errors import NeasError

    with pytest.raises(NeasError, match="digits dataset is bundled with scikit-learn and reads no directory"):
        load_dataset("digits", "test", 8, data_dir=tmp_path)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ood-data-dir", "."], "--ood-data-dir is read only with --ood-data, which is not given"),
        (["--ood-split", "train"], "--ood-split is read only with --ood-data"),
        (["--ood-download"], "--ood-download is read only with --ood-data"),
        (["--cascade-tolerance", "3"], "--cascade-tolerance is read only with --cascade"),
        (["--severities", "3"], "--severities is read only with --corruptions"),
        (["--corruption-seed", "4"], "--corruption-seed is read only with --corruptions"),
    ],
)
def test_an_option_without_the_one_it_refines_is_refused_not_ignored(tmp_path, capsys, flags, message):
    """``neas retrain --ood-data-dir D`` without ``--ood-data`` (and evaluate's) was accepted, with no effect."""
    model = _write(tmp_path / "model.safetensors", "")  # never read: the options are refused first
    # evaluate first: without the check it fails at once on the empty model (retrain would train)
    for argv in (["evaluate", "--checkpoint", model], ["retrain", "--out", str(tmp_path / "o")]):
        _one_clean_line(capsys, main([*argv, *flags]), message)


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--checkpoint", "{model}", "--json", "{tmp}/nodir/e.json"],
        ["evaluate", "--checkpoint", "{model}", "--save-scores", "{tmp}/nodir/s.npz"],
        ["latency-table", "--space", "tiny", "--out", "{tmp}/nodir/l.json"],
    ],
)
def test_an_output_in_a_missing_directory_is_refused_before_the_work(tmp_path, capsys, argv):
    """The model is an empty file: had the work started, its error would have come first."""
    model = _write(tmp_path / "model.safetensors", "")
    argv = [a.replace("{model}", model).replace("{tmp}", str(tmp_path)) for a in argv]
    _one_clean_line(capsys, main(argv), "nodir does not exist; create it first")


class _Unreadable:
    """A dataset whose every item fails as a truncated image does, in a loader worker."""

    def __init__(self, exc):
        self.exc = exc

    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise self.exc


@pytest.mark.parametrize(
    "exc, line",
    [
        ("neas", "neas: error: b.png: cannot read image (image file is truncated) (in DataLoader worker process 0)"),
        (OSError("image file is truncated"), "neas: error: image file is truncated (OSError in DataLoader worker"),
    ],
)
def test_an_error_in_a_loader_worker_is_its_own_line_not_the_workers_traceback(capsys, exc, line):
    """``neas detect --workers 1`` on a truncated PNG printed ``Caught OSError in DataLoader worker process 0.
    Original Traceback (most recent call last): File ...`` inside the error line."""
    import torch

    from neas.errors import NeasError, report_error

    exc = NeasError("b.png: cannot read image (image file is truncated)") if exc == "neas" else exc
    with pytest.raises(type(exc)) as raised:
        list(torch.utils.data.DataLoader(_Unreadable(exc), num_workers=1))
    assert report_error(raised.value) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err, err
