"""``--init`` weights (neas.ensemble.pretrained): every tensor of the file lands where it belongs, only the
classifiers are re-initialised when the classes differ, and a file of another arch, space or input size is
refused naming the first key (or field) that differs."""

import argparse
import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from neas.ensemble import build_ensemble
from neas.ensemble.io import save_ensemble
from neas.ensemble.pretrained import check_init, load_init, read_init
from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace
from neas.space.presets import ARCH_PRESETS

from .test_official import _random_state, released_shapes

TINY = SearchSpace.preset("tiny")
ARCH = EnsembleArch.sample(TINY, 5)
CLASSES = [f"c{i}" for i in range(10)]


def _trained(space=TINY, arch=ARCH, num_classes=10, seed=1):
    """A network whose every tensor differs from a fresh one's (random values, BN statistics included)."""
    net = build_ensemble(space, arch, num_classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in net.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            else:
                value.fill_(7)
    return net


@pytest.fixture(scope="module")
def neas_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "model.safetensors"
    save_ensemble(_trained(), path, classes=tuple(CLASSES))
    return path


def _fresh(num_classes=10, seed=5):
    torch.manual_seed(seed)
    return build_ensemble(TINY, ARCH, num_classes)


def test_init_loads_every_tensor_of_the_file(neas_file):
    weights = read_init(neas_file.parent)  # a run directory names its model.safetensors
    assert weights.kind == "neas"
    net = _fresh()
    line = load_init(net, weights, CLASSES)
    assert "all 130 tensors" in line and "heads included" in line
    own = net.state_dict()
    assert set(own) == set(weights.tensors)
    for key, value in weights.tensors.items():
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize("classes", [CLASSES[:5], [f"d{i}" for i in range(10)]], ids=["fewer", "other-names"])
def test_only_the_heads_are_reinitialised_when_the_classes_differ(neas_file, classes):
    weights = read_init(neas_file)
    net = _fresh(len(classes))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    line = load_init(net, weights, classes)
    assert "4 classifier tensors re-initialised" in line
    heads = {f"classifiers.{k}.{p}" for k in range(2) for p in ("weight", "bias")}
    for key, value in net.state_dict().items():
        if key in heads:
            assert torch.equal(value, before[key]), key  # the fresh initialisation, kept
            assert not torch.equal(value, weights.tensors[key][: value.shape[0]]), key
        else:
            assert torch.equal(value, weights.tensors[key]), key


def _error(weights, space=TINY, arch=ARCH, num_classes=10) -> str:
    with torch.device("meta"):
        probe = build_ensemble(space, arch, num_classes)
    with pytest.raises(NeasError) as info:
        check_init(weights, space, probe.state_dict(), CLASSES[:num_classes])
    return str(info.value)


def test_a_file_of_another_arch_space_or_input_size_is_refused(neas_file, tmp_path):
    weights = read_init(neas_file)
    other_arch = EnsembleArch.sample(TINY, 99, split=1)
    text = _error(weights, arch=other_arch)
    assert str(neas_file) in text and "does not fit the ensemble being trained" in text
    assert "expected (" in text and f"arch {ARCH}" in text
    wide = dataclasses.replace(TINY, head_channels=96)
    text = _error(weights, space=wide)
    assert "in the file, expected" in text and "(64," in text and "(96," in text
    # the same tensors at another input size: nothing in the shapes says it, the file's space does
    big = dataclasses.replace(TINY, input_size=64)
    text = _error(weights, space=big)
    assert "trained at input size 32" in text and "64 px" in text
    strided = dataclasses.replace(TINY, stem_stride=1)
    assert "space field 'stem_stride' is 2 in the file, 1 in this run's space" in _error(weights, space=strided)
    extra = tmp_path / "extra.safetensors"
    save_file({**weights.tensors, "spare.weight": torch.zeros(2)}, str(extra))
    assert "a tensor 'spare.weight' that the ensemble lacks" in _error(read_init(extra))


def test_a_timm_folder_or_plain_safetensors_file(neas_file, tmp_path):
    weights = read_init(neas_file)
    folder = tmp_path / "timm"
    folder.mkdir()
    save_file(weights.tensors, str(folder / "model.safetensors"))
    config = {"architecture": "neas_ensemble", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 32, 32]}}
    (folder / "config.json").write_text(json.dumps(config))
    plain = read_init(folder)
    assert plain.kind == "safetensors" and plain.input_size == 32
    net = _fresh()
    load_init(net, plain, CLASSES)
    assert all(torch.equal(v, weights.tensors[k]) for k, v in net.state_dict().items())
    config["pretrained_cfg"]["input_size"] = [3, 224, 224]
    (folder / "config.json").write_text(json.dumps(config))
    assert "trained at input size 224" in _error(read_init(folder))


def test_a_released_checkpoint_through_the_safe_loader(tmp_path):
    shapes = released_shapes(ARCH_PRESETS["neas-s"], 1000)
    ema = _random_state(shapes, 1)
    path = tmp_path / "neas_s.pth.tar"
    torch.save({"state_dict": ema, "state_dict_ema": ema, "args": argparse.Namespace(lr=0.064)}, path)
    weights = read_init(path)
    assert weights.kind == "released" and weights.input_size == 224
    imagenet = SearchSpace.preset("imagenet")
    net = build_ensemble(imagenet, EnsembleArch.preset("neas-s"), 5)
    line = load_init(net, weights, CLASSES[:5])
    assert "the file has 1000 classes, the data 5" in line
    for key, value in net.state_dict().items():
        if not key.startswith("classifiers."):
            assert torch.equal(value, ema[key]), key
    assert "trained at input size 224" in _error(
        weights, space=dataclasses.replace(imagenet, input_size=192), arch=EnsembleArch.preset("neas-s"), num_classes=5
    )
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": ema, "hook": print}, evil)
    with pytest.raises(NeasError, match="refused") as info:
        read_init(evil)
    assert str(info.value).startswith(f"--init {evil}: refused") and "a released .pth.tar" in str(info.value)


@pytest.mark.parametrize("head", [b"\x08\x07\x12\x07pytorch\x1a\x052.1.0", b"hello, not weights at all", b""])
def test_a_file_of_another_format_is_refused_naming_init_and_the_forms_it_takes(tmp_path, head):
    path = tmp_path / "c.onnx"  # an ONNX file begins with protobuf field 1 (0x08); torch would say "operand 8"
    path.write_bytes(head)
    with pytest.raises(NeasError) as info:
        read_init(path)
    text = str(info.value)
    assert text.startswith(f"--init {path}: not a checkpoint (neither a torch .pth.tar nor a safetensors file)")
    assert "expected a neas model.safetensors, a `neas retrain` / `neas run` directory, a timm folder" in text
    assert "operand" not in text
