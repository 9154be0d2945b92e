"""One preprocessing (issue 38, item 3): the record, its checks, where it is stored, and the rule for crop_pct."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from neas.data.datasets import decode_image, load_dataset, preprocessing_of
from neas.data.preprocess import Preprocessing, evaluation_crop_pct
from neas.ensemble.io import EnsembleFile, load_ensemble, save_ensemble
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace


def test_the_crop_follows_the_training_augmentation():
    assert evaluation_crop_pct(streamed=False) == 1.0  # padded random crops of the whole image
    assert evaluation_crop_pct(streamed=True) == 0.875  # RandomResizedCrop: timm's evaluation crop
    view = Preprocessing(32, 0.875)
    assert view.resize_size == 36 and "36 px" in view.describe() and "whatever its size" in view.describe()
    assert Preprocessing.from_json(view.to_json(), "f") == view


def test_an_image_of_the_input_size_passes_unchanged_at_crop_1_and_is_cropped_at_0875(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    assert torch.equal(decode_image(str(tmp_path / "x.png"), 32, 1.0), torch.from_numpy(pixels).permute(2, 0, 1))
    assert not torch.equal(decode_image(str(tmp_path / "x.png"), 32, 0.875), torch.from_numpy(pixels).permute(2, 0, 1))


def test_a_training_split_in_memory_or_streamed_gives_its_models_crop(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.new("RGB", (40, 36), (10, 20, 30)).save(tmp_path / "train" / c / "x.png")
    memory = load_dataset("imagefolder", "train", 32, tmp_path, decode="memory")
    streamed = load_dataset("imagefolder", "train", 32, tmp_path, decode="stream")
    assert memory.crop_pct == streamed.crop_pct == 1.0  # the training view either way
    assert preprocessing_of(memory, 32).crop_pct == 1.0 and preprocessing_of(streamed, 32).crop_pct == 0.875


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"input_size": 0, "crop_pct": 1.0}, "input_size"),
        ({"input_size": 32, "crop_pct": 1.5}, "crop_pct"),
        ({"input_size": 32, "crop_pct": float("nan")}, "crop_pct"),
        ({"input_size": 32, "crop_pct": 1.0, "interpolation": "lanczos9"}, "interpolation"),
        ({"input_size": 32, "crop_pct": 1.0, "mean": [0.5, 0.5]}, "mean"),
        ({"input_size": 32, "crop_pct": 1.0, "std": [0.2, 0.0, 0.2]}, "std"),
        ({"input_size": 32, "crop_pct": 1.0, "crop_mode": "squash"}, "crop_mode"),
        ({"input_size": 32, "crop_pct": 1.0, "extra": 1}, "extra"),
        ([32, 1.0], "JSON object"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field(record, field):
    with pytest.raises(NeasError, match=field):
        Preprocessing.from_json(record, "model.safetensors")


def _file(tmp_path, **fields):
    space = SearchSpace.preset("tiny")
    net = EnsembleNet(space, EnsembleArch.sample(space, 0, split=2), 3)
    path = tmp_path / "m.safetensors"
    save_ensemble(net, path, **fields)
    return path


def _rewrite(path, **changes):
    with safe_open(str(path), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    save_file(tensors, str(path), metadata=meta)


def test_the_model_file_records_the_preprocessing_and_an_edit_is_damage(tmp_path):
    path = _file(tmp_path, preprocessing=Preprocessing(32, 0.875))
    net, info = load_ensemble(path)
    assert info.preprocess == Preprocessing(32, 0.875) and net.pretrained_cfg["crop_pct"] == 0.875
    _rewrite(path, preprocessing=json.dumps(Preprocessing(32, 1.0).to_json()))
    with pytest.raises(NeasError, match="damaged or edited.*preprocessing"):
        load_ensemble(path)
    with pytest.raises(NeasError, match="input_size"):
        EnsembleFile(info.space, info.arch, 3, preprocessing=Preprocessing(64, 1.0))


def test_a_file_written_before_the_record_loads_with_its_old_hash_at_crop_1(tmp_path):
    path = _file(tmp_path, temperature={"temperature": 1.5})
    with safe_open(str(path), "pt") as f:
        assert "preprocessing" not in f.metadata()
    _, info = load_ensemble(path)  # its record_sha256 was computed without the key: still intact
    assert info.preprocessing is None and info.preprocess == Preprocessing(32, 1.0)
