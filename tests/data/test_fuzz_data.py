"""Image folders as a fuzzer left them (issue 30): 16-bit images, rewritten files under the decode
cache, unsupported extensions and a broken image inside a streaming loader worker."""

import logging
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from neas.cli import main
from neas.data import BatchLoader, Training, load_dataset
from neas.data.datasets import cache_dir, decode_image
from neas.errors import NeasError


def _gradients(n=4, size=24):
    """``n`` 16-bit grey gradients (size, size), each another ramp."""
    ramp = np.add.outer(np.arange(size), np.arange(size)) / (2 * size - 2)
    return [np.rint(65535 * ramp ** (1 + i / 2)).astype(np.uint16) for i in range(n)]


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_grey_images_decode_to_their_pixels_not_white(tmp_path, mode):
    for c, arrays in (("a", _gradients()), ("b", _gradients()[::-1])):
        (tmp_path / "wide" / "train" / c).mkdir(parents=True)
        (tmp_path / "byte" / "train" / c).mkdir(parents=True)
        for i, a in enumerate(arrays):
            wide = {"I;16": a, "I": a.astype(np.int32), "F": a.astype(np.float32) / 65535}[mode]
            Image.fromarray(wide).save(tmp_path / "wide" / "train" / c / f"{i}.{'png' if mode == 'I;16' else 'tif'}")
            Image.fromarray((a >> 8).astype(np.uint8)).save(tmp_path / "byte" / "train" / c / f"{i}.png")
    assert Image.open(next((tmp_path / "wide" / "train" / "a").iterdir())).mode == mode
    wide, byte = (load_dataset("imagefolder", "train", 24, tmp_path / d, decode="memory") for d in ("wide", "byte"))
    assert wide.images.float().std() > 50  # not one solid colour
    assert (wide.images.int() - byte.images.int()).abs().max() <= 1
    streamed = load_dataset("imagefolder", "train", 24, tmp_path / "wide", decode="stream")
    x = torch.cat([x for x, _ in BatchLoader(streamed, 4, Training(seed=0)).epoch(0)])  # timm's training transform
    assert x.std(dim=(1, 2, 3)).min() > 0.3  # every augmented image varies (solid white: 0)
    assert (decode_image(streamed.paths[0], 24).int() - byte.images[0].int()).abs().max() <= 1


def test_files_with_unsupported_extensions_are_counted_in_one_warning_per_split(tmp_path, caplog):
    for c in ("a", "b"):
        (tmp_path / "train" / c / "deep").mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "train" / c / "ok.png")
        Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "train" / c / "moving.GIF")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "deep" / "x.gif")
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "b" / "LICENSE").write_text("not an image")
    (tmp_path / "train" / "b" / ".DS_Store").write_text("hidden: not counted")
    with caplog.at_level(logging.WARNING, logger="neas.data.datasets"):
        data = load_dataset("imagefolder", "train", 8, tmp_path)
    assert len(data) == 2
    warnings = [r.getMessage() for r in caplog.records if "supported image extension" in r.getMessage()]
    assert len(warnings) == 1
    assert "skipping 5 file(s) without a supported image extension ((none) x1, .gif x3, .txt x1)" in warnings[0]


def test_a_broken_image_in_a_streaming_loader_worker_is_one_error_line(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "d" / "train" / c).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (20, 20), (30 * i, 90, 150)).save(tmp_path / "d" / "train" / c / f"{i}.png")
    broken = tmp_path / "d" / "train" / "a" / "3.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated inside the image data
    argv = ["train-supernet", "--data", "imagefolder", "--data-dir", str(tmp_path / "d"), "--space", "tiny"]
    argv += ["--decode", "stream", "--workers", "2", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    code = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"neas: error: cannot read image {broken}: "), err
    assert "Traceback" not in err and "worker" not in err, err


def _two_classes(root, colour):
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 12), colour if c == "a" else (5, 5, 5)).save(root / "train" / c / "x.bmp")
    return root


def test_a_file_rewritten_with_its_old_size_and_mtime_is_decoded_again_not_served_from_the_cache(tmp_path):
    root = _two_classes(tmp_path / "d", (200, 0, 0))
    image = root / "train" / "a" / "x.bmp"
    before = os.stat(image)
    first = load_dataset("imagefolder", "train", 8, root, decode="memory")
    assert load_dataset("imagefolder", "train", 8, root, decode="memory").images.equal(first.images)  # cached
    Image.new("RGB", (12, 12), (0, 200, 0)).save(image)  # what `cp -p` or `tar x` of another version leaves
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(image).st_size == before.st_size
    assert os.stat(image).st_mtime_ns == before.st_mtime_ns
    again = load_dataset("imagefolder", "train", 8, root, decode="memory")
    assert again.images[0, :, 0, 0].tolist() == [0, 200, 0]


def test_the_decode_cache_is_capped_least_recently_used_first_and_keeps_other_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NEAS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mine.npy").write_bytes(b"x" * 10_000)  # not written by the cache: never removed
    monkeypatch.setenv("NEAS_CACHE_MAX_GB", str(2 * (2 * 3 * 8 * 8 + 128) / 2**30))  # room for two folders
    roots = [_two_classes(tmp_path / f"d{i}", (50 * i, 0, 0)) for i in range(3)]
    load_dataset("imagefolder", "train", 8, roots[0], decode="memory")
    first = set(cache_dir().glob("*.npy"))
    time.sleep(0.05)  # file times tick coarsely
    load_dataset("imagefolder", "train", 8, roots[1], decode="memory")
    second = set(cache_dir().glob("*.npy")) - first
    time.sleep(0.05)
    load_dataset("imagefolder", "train", 8, roots[0], decode="memory")  # read again: d1's array is now the oldest
    time.sleep(0.05)
    load_dataset("imagefolder", "train", 8, roots[2], decode="memory")
    kept = set(cache_dir().glob("*.npy"))
    assert len(kept) == 4 - 1
    assert first <= kept
    assert not second & kept
    monkeypatch.setenv("NEAS_CACHE_MAX_GB", "0")
    load_dataset("imagefolder", "train", 8, _two_classes(tmp_path / "d3", (1, 2, 3)), decode="memory")
    assert set(cache_dir().glob("*.npy")) == kept
    monkeypatch.setenv("NEAS_CACHE_MAX_GB", "lots")
    with pytest.raises(NeasError, match="NEAS_CACHE_MAX_GB must be a number of GiB >= 0, got 'lots'"):
        load_dataset("imagefolder", "train", 8, roots[0], decode="memory")
