"""Run directories under damage (issue 30, second fuzzing pass): checkpoints and weights files
that were truncated, deleted or bit-flipped, a corrupt ``state.json``, a lost ``config.yaml`` or
marker, a full disk. Each is either survived (the newest intact checkpoint is used, saying so) or
ends as one ``neas: error:`` line naming the file."""

import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import neas.io as neas_io
from neas.cli import main
from neas.errors import NeasError
from neas.io import load_weights, save_tensors, write_json

from .test_robustness import _one_error_line


def _flip(path: Path, count: int = 64) -> None:
    """Inverts ``count`` bytes near the end of a safetensors file: tensor data, not the header."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - count - 8, len(data) - 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- the integrity check and the file mode -------------------------------------------------


def test_every_weights_file_records_a_sha256_of_its_tensors_that_loading_checks(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"b": torch.arange(300.0), "a": torch.ones(2, 2, dtype=torch.bfloat16)}, {"k": "v"})
    tensors, meta = load_weights(path)
    assert len(meta["sha256"]) == 64
    assert meta["k"] == "v"
    _flip(path)
    with pytest.raises(NeasError, match=f"{path}: damaged: its tensors do not match the SHA-256"):
        load_weights(path)


def test_a_weights_file_written_before_the_sha256_still_loads(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"a": torch.ones(3)}, str(path), metadata={"k": "v"})
    tensors, meta = load_weights(path)
    assert torch.equal(tensors["a"], torch.ones(3))
    assert "sha256" not in meta


def test_weights_files_get_the_same_mode_as_every_other_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_tensors(tmp_path / "w.safetensors", {"a": torch.ones(1)})
        write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_ends_as_an_error_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.ones(1)})
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(neas_io.os, "fsync", full)
    with pytest.raises(NeasError, match=f"{path}: cannot write \\(No space left on device\\)"):
        save_tensors(path, {"a": torch.zeros(1)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left


def test_a_damaged_model_header_is_one_error_line_naming_it(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\xff\x00\x00\x00\x00\x00\x00\x00" + b"{" * 255)
    code = main(["evaluate", "--checkpoint", str(path), "--device", "cpu"])
    _one_error_line(capsys, code, str(path))


def test_a_model_file_whose_metadata_lacks_the_space_is_one_error_line_naming_it(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"a": torch.ones(4)}, {"format": "neas.ensemble/1"})
    code = main(["evaluate", "--checkpoint", str(path), "--device", "cpu"])
    _one_error_line(capsys, code, f"{path}: space: missing required key(s)")
