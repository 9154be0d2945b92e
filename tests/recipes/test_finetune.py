"""``neas retrain --init`` end to end on tiny data: pre-train on digits, fine-tune on an image folder of other
classes (heads re-initialised, said in one line), with frozen BN; a file of another space is refused with
one line and nothing written."""

import logging

import pytest
import torch
from safetensors.torch import load_file

from neas.cli import main
from neas.ensemble.io import load_ensemble
from neas.schemas.retrain import RETRAIN_PRESETS, RetrainConfig
from neas.space import EnsembleArch, SearchSpace

from ..data.test_reproducible_draws import _write_folder

FAST = ["--batch-size", "16", "--device", "cpu", "--randaugment", "none", "--workers", "0"]


def _arch(path, seed: int, split: int):
    space = SearchSpace.preset("tiny")
    EnsembleArch.sample(space, seed, split=split).save(path, space=space.to_dict())
    return path


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    return _arch(tmp_path_factory.mktemp("arch") / "arch.json", 3, split=2)


@pytest.fixture(scope="module")
def pretrained(arch_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    assert (
        main(["retrain", "--arch", str(arch_file), "--data", "digits", "--epochs", "1", "--out", str(out), *FAST]) == 0
    )
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("folder") / "data", per_class=8)


def _finetune(arch_file, init, folder, out, *extra):
    data = ["--data", "imagefolder", "--data-dir", str(folder), "--epochs", "2"]
    return main(["retrain", "--arch", str(arch_file), "--init", str(init), "--recipe", "finetune", *data, *FAST,
                 "--out", str(out), *extra])  # fmt: skip


def test_finetune_reinitialises_the_heads_and_keeps_frozen_bn(arch_file, pretrained, folder, tmp_path, caplog):
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        assert _finetune(arch_file, pretrained, folder, out, "--frozen-bn") == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("init:")]
    assert len(lines) == 1 and "classifier tensors re-initialised (the file has 10 classes, the data 3)" in lines[0]
    net, info = load_ensemble(out)  # frozen BN is saved as BatchNorm: the file loads as any other
    assert info.classes == ("cat", "dog", "frog") and info.recipe == "finetune"
    start, end = load_file(str(pretrained / "model.safetensors")), net.state_dict()
    bn = [k for k in start if k.endswith(("running_mean", "running_var")) or ".bn" in k or k.startswith("bn1.")]
    bn = [k for k in bn if not k.endswith("num_batches_tracked")]
    assert len(bn) > 20
    for key in bn:  # frozen: statistics and affine as the file had them
        torch.testing.assert_close(end[key], start[key], rtol=0, atol=1e-6, msg=key)
    assert not torch.equal(end["conv_stem.weight"], start["conv_stem.weight"])  # the rest trained


def test_a_mismatched_init_is_refused_before_anything_is_written(arch_file, pretrained, folder, tmp_path, capsys):
    other = _arch(tmp_path / "other.json", 11, split=1)
    out = tmp_path / "ft"
    assert _finetune(other, pretrained, folder, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neas: error: --init ")
    assert "model.safetensors: does not fit the ensemble being trained" in err[0] and "expected (" in err[0]
    assert not out.exists()
    assert _finetune(arch_file, pretrained, folder, out, "--space", "cifar") == 2
    assert not out.exists()
    assert main(["retrain", "--arch", str(arch_file), "--recipe", "finetune", "--out", str(out)]) == 2
    assert "recipe finetune starts from trained weights: give --init FILE" in capsys.readouterr().err
    assert main(["retrain", "--arch", str(arch_file), "--init", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "init" in capsys.readouterr().err
    (tmp_path / "c.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    assert main(["retrain", "--arch", str(arch_file), "--init", str(tmp_path / "c.onnx"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"neas: error: --init {tmp_path / 'c.onnx'}: not a checkpoint")
    assert "a timm folder (`neas export --format timm`) or a released .pth.tar" in err[0]
    assert not out.exists()


def test_the_finetune_recipe_is_shorter_than_small():
    small, finetune = RETRAIN_PRESETS["small"], RETRAIN_PRESETS["finetune"]
    assert finetune["epochs"] < small["epochs"] and finetune["ema_decay"] < small["ema_decay"]
    cfg = RetrainConfig(arch="neas-s", recipe="finetune", init="x.safetensors", frozen_bn=True)
    assert cfg.epochs == 10 and cfg.frozen_bn is True
