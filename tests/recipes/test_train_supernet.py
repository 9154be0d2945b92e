import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import neas.train.checkpoint as checkpoint
from neas.cli import main
from neas.config import from_dict
from neas.errors import NeasError
from neas.log import MetricLogger
from neas.recipes.train_supernet import SupernetConfig, train_supernet
from neas.space import EnsembleArch
from neas.supernet.io import load_supernet

from ..helpers import Killed, tiny_supernet, tiny_supernet_argv


def small(out, **kw):
    return from_dict(SupernetConfig, tiny_supernet(**{"out": str(out), "shrink": "diversity", "seed": 3, **kw}))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sn") / "run"
    train_supernet(small(out))
    return out


def test_run_directory(finished):
    for name in ("config.yaml", "state.json", "supernet.safetensors", "metrics.jsonl", "shrunk_space.json"):
        assert (finished / name).is_file(), name
    rounds = sorted((finished / "shrink").glob("round_*.json"))
    assert [p.name for p in rounds] == ["round_00.json", "round_01.json", "round_02.json"]  # not after the last epoch
    record = json.loads(rounds[0].read_text())
    assert record["combinations_before"] == 32
    assert record["combinations_after"] == 29
    assert {"S", "r", "scores"} <= set(record["layers"][0])
    metrics = MetricLogger.read(finished)
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3]
    assert {"loss", "lr", "ensemble_acc", "images_per_s", "combinations"} <= set(metrics[0])
    assert list((finished / "tb").iterdir())
    model, info = load_supernet(finished)
    shrunk = info.shrunk
    assert shrunk.num_combinations == 32 - 9
    assert info.num_classes == 10
    arch = EnsembleArch.sample(model.space, 0, shrunk)
    assert len(model(torch.randn(2, 3, 32, 32), arch)) == 2


def _weights(run):
    return load_file(str(Path(run) / "supernet.safetensors"))


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_a_kill_between_epochs(finished, tmp_path, kill_after):
    import neas.train.recipe as training

    restore = kill_after(training, "save_checkpoint", after=2)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_supernet(small(out))
    restore()
    train_supernet(small(out, resume=True))
    _assert_same(_weights(out), _weights(finished))
    assert [m["epoch"] for m in MetricLogger.read(out)] == [0, 1, 2, 3]
    assert sorted(p.name for p in (out / "shrink").iterdir()) == sorted(p.name for p in (finished / "shrink").iterdir())


def test_resume_after_a_kill_during_a_checkpoint_write(finished, tmp_path, kill_after):
    # the third checkpoint: die with a half-written temporary file
    def half_written(path, tensors, metadata=None):  # what a kill inside the write leaves: its temporary file
        Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp").write_bytes(b"\x00" * 100)

    restore = kill_after(checkpoint, "save_tensors", after=3, instead=half_written)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_supernet(small(out))
    assert json.loads((out / "state.json").read_text())["epoch"] == 1
    restore()
    train_supernet(small(out, resume=True))
    _assert_same(_weights(out), _weights(finished))


@pytest.mark.slow
def test_sigkill_and_resume_from_the_cli(finished, tmp_path):
    out = tmp_path / "run"
    args = tiny_supernet_argv(seed=3, out=out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "neas", "train-supernet", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    import time

    deadline = time.time() + 120
    while (
        not (out / "checkpoints" / "epoch_0001.safetensors").exists() and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert main(["train-supernet", *args, "--resume"]) == 0
    _assert_same(_weights(out), _weights(finished))


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "neas",
        "train-supernet",
        *tiny_supernet_argv(epochs=2, batch_size=32, lr=None, shrink_drop=2, probe_images=32, out=out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "supernet.safetensors").is_file()
    assert (out / "shrink" / "round_00.json").is_file()
    metrics = MetricLogger.read(out)
    assert [m["epoch"] for m in metrics] == [0, 1]  # rank 0 alone writes
    assert all(torch.isfinite(v.float()).all() for v in _weights(out).values())


@pytest.mark.slow
def test_sampled_ensemble_accuracy_rises_well_above_chance(tmp_path):
    train_supernet(
        small(tmp_path / "run", epochs=12, batch_size=32, lr=0.1, augment=False, shrink_every=3, shrink_drop=4)
    )
    accuracy = [m["ensemble_acc"] for m in MetricLogger.read(tmp_path / "run")]
    # chance is 0.1; seed 3 measured 0.14 after the first epoch and 0.89 after the last
    assert accuracy[-1] > 0.6, accuracy  # well above chance at the end
    assert accuracy[0] < 0.6, accuracy  # ... and not from the start: it rose during training


# ---- bad input -----------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = main(["train-supernet", *argv])
    return code, capsys.readouterr().err


def test_existing_run_directory_is_not_overwritten(finished, capsys):
    before = (finished / "supernet.safetensors").read_bytes()
    code, err = run_cli(capsys, "--out", str(finished))
    assert code == 2, err
    assert "already exists" in err
    assert "--resume" in err
    assert (finished / "supernet.safetensors").read_bytes() == before


def test_resume_without_checkpoint(tmp_path, capsys):
    code, err = run_cli(capsys, "--out", str(tmp_path / "nothing"), "--resume")
    assert code == 2, err
    assert "no checkpoint to resume from" in err


def test_resume_with_a_different_config(finished, capsys):
    code, err = run_cli(
        capsys,
        "--out",
        str(finished),
        "--resume",
        *tiny_supernet_argv(epochs=9, seed=3, device=None),
    )
    assert code == 2, err
    assert "config differs" in err
    assert "epochs: 4 -> 9" in err


def test_unknown_yaml_key_suggests(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("space: tiny\nshrink_evry: 3\n")
    code, err = run_cli(capsys, "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2, err
    assert "unknown key 'shrink_evry' (did you mean 'shrink_every'?)" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--data", "imagefolder", "--data-dir", "/nonexistent/data"],
            "data_dir: no such directory '/nonexistent/data'",
        ),
        (["--data", "imagenet"], "data: unknown 'imagenet' (did you mean 'imagefolder'?)"),
        (["--shrink", "diversty"], "did you mean 'diversity'"),
        (["--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_bad_options(tmp_path, capsys, argv, message):
    code, err = run_cli(capsys, "--out", str(tmp_path / "r"), *argv)
    assert code == 2, err
    assert message in err


def test_imagefolder_errors(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    code, err = run_cli(capsys, "--data", "imagefolder", "--data-dir", str(root), "--out", str(tmp_path / "r1"))
    assert code == 2, err
    assert "has no class folders" in err
    (root / "train" / "cat").mkdir()
    (root / "train" / "dog").mkdir()
    code, err = run_cli(capsys, "--data", "imagefolder", "--data-dir", str(root), "--out", str(tmp_path / "r2"))
    assert code == 2, err
    assert "contains no images" in err
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(root / "train" / "cat" / "a.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    code, err = run_cli(capsys, "--data", "imagefolder", "--data-dir", str(root), "--out", str(tmp_path / "r3"))
    assert code == 2, err
    assert "cannot read image" in err
    assert "broken.jpg" in err


def test_space_dataset_mismatch(tmp_path, capsys):
    space = tmp_path / "gray.yaml"
    from neas.space import SearchSpace

    data = SearchSpace.preset("tiny").to_dict()
    data["in_channels"] = 1
    import yaml

    space.write_text(yaml.safe_dump(data))
    code, err = run_cli(capsys, "--space", str(space), "--out", str(tmp_path / "r"))
    assert code == 2, err
    assert "in_channels=1" in err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import types

    import torch.nn.functional as F

    import neas.recipes.train_supernet as recipe

    calls = []

    def cross_entropy(logits, y):
        calls.append(1)
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) > 2 * 25 else loss  # K=2 losses per step: NaN from step 25

    monkeypatch.setattr(recipe, "F", types.SimpleNamespace(cross_entropy=cross_entropy))
    out = tmp_path / "run"
    with pytest.raises(
        NeasError, match=r"loss became nan at step 25 \(epoch 2\); stopping — the last good checkpoint is kept"
    ):
        train_supernet(small(out, shrink="none"))
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 0
    assert (out / state["checkpoint"]).is_file()
    calls.clear()
    monkeypatch.setattr(
        recipe, "F", types.SimpleNamespace(cross_entropy=lambda logits, y: F.cross_entropy(logits, y) * float("nan"))
    )
    with pytest.raises(
        NeasError, match=r"loss became nan at step 0 \(epoch 1\); stopping — no checkpoint was written yet"
    ):
        train_supernet(small(tmp_path / "first", shrink="none"))


def test_resume_refuses_a_run_calibrated_on_other_sets(finished, tmp_path):
    import shutil

    import yaml

    out = tmp_path / "old"
    shutil.copytree(finished, out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**config, "out": str(out)}, sort_keys=False))
    state = json.loads((out / "state.json").read_text())
    assert state.pop("calibration")["bn_images"] == 64
    (out / "state.json").write_text(json.dumps(state))  # as a run started before the sets were stratified
    with pytest.raises(NeasError, match="calibrated or scored on other BN/held-out sets"):
        train_supernet(small(out, resume=True))
