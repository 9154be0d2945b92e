"""Run directories under damage (issue 30, second fuzzing pass): checkpoints and weights files
that were truncated, deleted or bit-flipped, a corrupt ``state.json``, a lost ``config.yaml`` or
marker, a full disk. Each is either survived (the newest intact checkpoint is used, saying so) or
ends as one ``neas: error:`` line naming the file."""

import dataclasses
import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import neas.io as neas_io
from neas.cli import main
from neas.errors import NeasError
from neas.io import load_weights, save_tensors, write_json
from neas.pipeline import run_stage
from neas.recipes.train_supernet import SupernetConfig
from neas.runfiles import SUPERNET
from neas.supernet.io import load_supernet
from neas.train.checkpoint import load_checkpoint, save_checkpoint

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
    _tensors, meta = load_weights(path)
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


# ---- checkpoints: the fallback on the newest intact one ------------------------------------


def _checkpointed(run: Path, epochs: int = 3) -> tuple[torch.nn.Module, dict]:
    """A run directory with checkpoints of ``epochs`` epochs (2 kept); the weights after each epoch."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weights = {}
    for epoch in range(epochs):
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        save_checkpoint(run, f"epoch_{epoch:04d}", model, optimizer, {"epoch": epoch})
        weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    return model, weights


DAMAGE = {
    "newest truncated": lambda run: (run / "checkpoints/epoch_0002.safetensors").write_bytes(b"x" * 40),
    "newest deleted": lambda run: (run / "checkpoints/epoch_0002.safetensors").unlink(),
    "newest bit-flipped": lambda run: _flip(run / "checkpoints/epoch_0002.safetensors"),
    "state.json empty": lambda run: (run / "state.json").write_text(""),
    "state.json deleted": lambda run: (run / "state.json").unlink(),
    "state.json a list": lambda run: (run / "state.json").write_text("[]"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_so(tmp_path, caplog, damage):
    _, weights = _checkpointed(tmp_path)
    DAMAGE[damage](tmp_path)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint(tmp_path, model, optimizer)
    expected = 2 if damage.startswith("state.json") else 1  # a lost state.json: the checkpoint holds the state
    assert state["epoch"] == expected
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[expected][k]), k
    if expected == 1:
        assert "resuming from the newest intact checkpoint instead" in caplog.text
        assert "epoch_0001.safetensors (epoch 2)" in caplog.text
    if damage != "state.json deleted":
        assert "state.json" in caplog.text or "epoch_0002" in caplog.text


def test_a_bit_flipped_checkpoint_without_an_older_one_is_refused_naming_it(tmp_path):
    _checkpointed(tmp_path, epochs=1)
    _flip(tmp_path / "checkpoints/epoch_0000.safetensors")
    with pytest.raises(NeasError, match="epoch_0000.safetensors: damaged: its tensors do not match the SHA-256"):
        load_checkpoint(tmp_path, torch.nn.Linear(4, 3), None)


# ---- through the command line, on a seconds-long supernet ----------------------------------


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train-supernet",
        "--space",
        "tiny",
        "--data",
        "imagefolder",
        "--data-dir",
        str(root),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--lr",
        "0.2",
        "--shrink",
        "none",
        "--bn-batches",
        "1",
        "--probe-images",
        "4",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for c, green in (("a", 80), ("b", 200)):
        (root / "train" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (32, 32), (20 * i, green, 120)).save(root / "train" / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def finished(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("sn") / "run"
    assert main(_args(images, out)) == 0
    return out


@pytest.fixture
def copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


def test_resuming_past_a_bit_flipped_checkpoint_redoes_its_epoch_from_the_older_one(images, finished, copy, caplog):
    _flip(copy / "checkpoints/epoch_0002.safetensors", 4096)
    (copy / SUPERNET).unlink()
    with caplog.at_level(logging.WARNING):
        assert main(_args(images, copy, "--resume")) == 0
    assert "epoch_0002.safetensors: damaged: its tensors do not match the SHA-256" in caplog.text
    assert "resuming from the newest intact checkpoint instead" in caplog.text
    _same_weights(copy / SUPERNET, finished / SUPERNET)


def test_a_damaged_finished_supernet_is_rebuilt_by_resume_and_readers_say_how(images, finished, copy, capsys):
    _flip(copy / SUPERNET)
    with pytest.raises(NeasError, match="--resume its run .* to rebuild it from the last checkpoint"):
        load_supernet(copy)
    assert main(_args(images, copy, "--resume")) == 0
    _same_weights(copy / SUPERNET, finished / SUPERNET)


def test_neas_run_resumes_a_stage_whose_finished_weights_file_is_damaged(copy, caplog):
    (copy / SUPERNET).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    calls = []
    cfg = SupernetConfig(out=str(copy))
    with caplog.at_level(logging.WARNING):
        run_stage(copy, [SUPERNET], lambda c: calls.append(c), cfg, "supernet")
    assert calls == [dataclasses.replace(cfg, resume=True)]
    assert "rebuilding it by resuming the stage" in caplog.text


def test_resume_refuses_a_run_whose_config_yaml_was_deleted(images, copy, capsys):
    (copy / "config.yaml").unlink()
    code = main(_args(images, copy, "--resume", "--lr", "0.3"))
    _one_error_line(capsys, code, f"{copy / 'config.yaml'} is missing")
    assert not (copy / "config.yaml").exists()


@pytest.mark.parametrize("text", ["[]", "{}", '{"epoch": "3", "checkpoint": "checkpoints/epoch_0002.safetensors"}'])
def test_a_corrupt_state_json_without_a_checkpoint_is_one_error_line_naming_it(images, copy, capsys, text):
    shutil.rmtree(copy / "checkpoints")
    (copy / "state.json").write_text(text)
    code = main(_args(images, copy, "--resume"))
    _one_error_line(capsys, code, f"{copy / 'state.json'}: corrupt state file")


def test_a_truncated_marker_is_one_error_line_naming_it(images, copy, capsys):
    marker = copy / "neas-run.json"
    marker.write_text(marker.read_text()[:10])
    code = main(_args(images, copy, "--resume"))
    _one_error_line(capsys, code, f"{marker}: damaged run marker")


def test_a_damaged_model_header_is_one_error_line_naming_it(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\xff\x00\x00\x00\x00\x00\x00\x00" + b"{" * 255)
    code = main(["evaluate", "--checkpoint", str(path), "--device", "cpu"])
    _one_error_line(capsys, code, str(path))


def test_a_full_disk_during_a_run_is_one_error_line_naming_the_file(images, copy, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(neas_io.os, "fsync", full)
    code = main(_args(images, copy, "--resume"))
    err = _one_error_line(capsys, code, "cannot write (No space left on device)")
    assert str(copy) in err
    json.loads((copy / "state.json").read_text())  # nothing was cut


def test_a_model_file_whose_metadata_lacks_the_space_is_one_error_line_naming_it(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"a": torch.ones(4)}, {"format": "neas.ensemble/1"})
    code = main(["evaluate", "--checkpoint", str(path), "--device", "cpu"])
    _one_error_line(capsys, code, f"{path}: space: missing required key(s)")
