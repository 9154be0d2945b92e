"""The one capped JSON reader and the JSON-lines reader that keeps ``append_line``'s promise."""

import json
import os

import pytest

import neas.io as io
from neas.errors import NeasError
from neas.io import append_line, read_json, read_jsonl


def test_a_line_cut_by_a_kill_is_skipped_and_the_others_kept_in_order(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for epoch in range(3):
        append_line(path, json.dumps({"epoch": epoch, "loss": 1.0 / (epoch + 1)}))
    with open(path, "a") as f:
        f.write('{"epoch": 3, "lo')  # the writer was killed mid-line
    assert read_jsonl(path) == [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 1 / 3}]


def test_lines_that_are_not_objects_are_skipped_and_a_missing_file_has_none(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('[1, 2]\n\n"text"\n{"a": 1}\n')
    assert read_jsonl(path) == [{"a": 1}]
    assert read_jsonl(tmp_path / "none.jsonl") == []


def test_both_readers_refuse_a_file_over_the_cap_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "MAX_JSON_BYTES", 16)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"key": "x" * 32}))
    with pytest.raises(NeasError, match=r"big\.json: too large for an evaluation \(\d+ bytes\)"):
        read_json(path, "an evaluation")
    with pytest.raises(NeasError, match=r"big\.json: too large for metric lines"):
        read_jsonl(path)


def test_read_json_takes_its_own_cap_and_keeps_the_default_otherwise(tmp_path, monkeypatch):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"key": "x" * 32}))
    with pytest.raises(NeasError, match=r"coco\.json: too large for a COCO file \(\d+ bytes\)"):
        read_json(path, "a COCO file", max_bytes=16)
    assert read_json(path, "a COCO file", max_bytes=1000) == {"key": "x" * 32}
    monkeypatch.setattr(io, "MAX_JSON_BYTES", 16)
    assert read_json(path, "a COCO file", max_bytes=1000) == {"key": "x" * 32}  # its own cap, above the default
    with pytest.raises(NeasError, match="too large"):
        read_json(path, "a COCO file")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_read_json_decodes_json_bytes_whatever_the_locale(tmp_path, encoding):
    """As ``json.loads`` decodes bytes: UTF-8 (a byte-order mark from a Windows tool tolerated), UTF-16/32."""
    path = tmp_path / "names.json"
    path.write_bytes(json.dumps({"name": "caf\u00e9 \u72ac"}, ensure_ascii=False).encode(encoding))
    assert read_json(path, "names") == {"name": "caf\u00e9 \u72ac"}


@pytest.mark.parametrize(
    "text, message",
    [("{", "not a readable arch file"), ("[1]", "must be a JSON object, got list"), ("{}", "lacks 'split'")],
)
def test_read_json_names_the_file_and_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "arch.json"
    path.write_text(text)
    with pytest.raises(NeasError, match=message):
        read_json(path, "arch file", ("split",))


@pytest.mark.parametrize(
    "text, message",
    [("[" * 200_000 + "]" * 200_000, "nested too deeply"), ('{"a": 1' + "0" * 5000 + "}", "an integer of more than")],
)
def test_read_json_refuses_a_crafted_document_as_unreadable_naming_the_file(tmp_path, text, message):
    """A document nested 200,000 deep raised RecursionError, past every reader's ``except ValueError``."""
    path = tmp_path / "detector.json"
    path.write_text(text)
    with pytest.raises(NeasError, match=f"detector.json: not a readable detector record \\(ValueError: {message}"):
        read_json(path, "detector record")
    assert read_jsonl(path) == []  # a metrics file's damaged line is skipped, as a line cut by a kill is


def test_an_output_whose_directory_is_missing_is_refused_before_the_work(tmp_path):
    """``--save-scores nodir/s.npz`` evaluated everything, then failed ``cannot write``."""
    with pytest.raises(NeasError, match="--save-scores .*s.npz: its directory .*nodir does not exist; create it first"):
        io.check_output(tmp_path / "nodir" / "s.npz", flag="--save-scores")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NeasError, match="its directory .*afile is a file"):
        io.check_output(tmp_path / "afile" / "e.json", flag="--json")
    assert io.check_output(tmp_path / "e.json") == tmp_path / "e.json"


def test_two_outputs_naming_one_file_are_refused():
    """``--json s.npz --save-scores s.npz``: the .npz was written, then the JSON replaced it."""
    with pytest.raises(NeasError, match="--json and --save-scores name the same file ./s.npz; give each its own"):
        io.check_distinct_outputs({"--json": "s.npz", "--save-scores": "./s.npz"})
    io.check_distinct_outputs({"--json": "-", "--save-scores": "s.npz", "--out": None})


def test_a_write_killed_mid_way_leaves_a_temporary_that_the_next_claim_of_its_run_removes(tmp_path):
    """A SIGKILL during a report write left report/.shrink_round_00.png.<pid>.tmp, which no resume removed."""
    import subprocess
    import sys

    from neas.rundir import claim_dir, release_run_dir
    from neas.runfiles import MARKER

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a process that has ended
    run = claim_dir(tmp_path / "run", "rank")
    release_run_dir(run)
    stale = run / "report" / f".shrink_round_00.png.{dead}.tmp"
    live = run / "report" / f".plot.png.{os.getppid()}.tmp"  # a write of a process that still runs
    nested = run / "job" / f".eval.json.{dead}.tmp"  # inside another run directory: its own run removes it
    for path in (stale, live, nested):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (run / "job" / MARKER).write_text("{}")
    (run / "report" / "notes.tmp").write_text("not ours")
    claim_dir(run, "rank")
    release_run_dir(run)
    assert not stale.exists()
    assert live.exists() and nested.exists() and (run / "report" / "notes.tmp").exists()
