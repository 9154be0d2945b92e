"""The deployable cascade (issue 28 item 5): one ONNX file per step equals PyTorch's cascade_predict."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neas.cli import main
from neas.ensemble.cascade import NEVER, cascade_predict
from neas.ensemble.cascade_export import OnnxCascade, _mixed_thresholds, export_cascade
from neas.ensemble.export import export
from neas.ensemble.io import save_ensemble, update_ensemble_file
from neas.ensemble.model import build_ensemble
from neas.errors import NeasError
from neas.runfiles import CASCADE_JSON
from neas.space import EnsembleArch, SearchSpace

pytest.importorskip("onnxruntime")


def _net(k: int, split: int, seed: int = 2):
    space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "num_paths": k, "split": [split, split]})
    net = build_ensemble(space, EnsembleArch.sample(space, random.Random(seed)), 10).eval()
    assert net.arch.split == split
    return net


def _reference(net, order, thresholds, temperature, x):
    with torch.no_grad():
        per_path = net.path_logits(x)
    return cascade_predict(torch.stack([per_path[k] for k in order]), thresholds, temperature)


def _images(n: int = 24, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "k,split,order,temperature", [(2, 2, [1, 0], None), (3, 1, [2, 0, 1], 0.7), (3, 0, [1, 2, 0], None)]
)
def test_onnx_cascade_equals_pytorch(k, split, order, temperature, tmp_path):
    net = _net(k, split)
    x = _images()
    with torch.no_grad():
        per_path = net.path_logits(x)
    thresholds = _mixed_thresholds(torch.stack([per_path[j] for j in order]), temperature)
    cascade = {"order": order, "thresholds": thresholds, "temperature": temperature, "tolerance": 0.5}
    diff = export_cascade(net, cascade, tmp_path / "c")
    assert diff <= 1e-4
    runtime = OnnxCascade(tmp_path / "c")
    got, stops = runtime(x.numpy())
    expected, expected_stops = _reference(net, order, thresholds, temperature, x)
    assert np.array_equal(stops, expected_stops.numpy())
    assert set(stops.tolist()) == set(range(1, k + 1))  # every step is exercised
    assert np.abs(got - expected.numpy()).max() <= 1e-4
    # the step files: step 1 takes the images, the others the trunk's output, each one path
    spec = json.loads((tmp_path / "c" / CASCADE_JSON).read_text())
    assert [s["path"] for s in spec["steps"]] == order
    assert runtime.inputs == ["images"] + ["features"] * (k - 1)


def test_threshold_extremes_and_round_trip(tmp_path):
    net = _net(3, 1)
    x = _images(10)
    cascade = {"order": [0, 2, 1], "thresholds": [0.0, 0.0], "temperature": 2.0, "tolerance": 0.5, "images": 7}
    export_cascade(net, cascade, tmp_path / "c")
    runtime = OnnxCascade(tmp_path / "c")
    batches = []  # what each step runs on: only the images not stopped yet
    for session in runtime.sessions:
        session.run = _spy(session.run, batches)
    with torch.no_grad():
        per_path = net.path_logits(x)
    logits, stops = runtime(x.numpy())
    assert (stops == 1).all() and np.abs(logits - per_path[0].numpy()).max() <= 1e-4
    assert batches == [10]  # everything stopped at step 1: steps 2 and 3 never ran
    runtime.thresholds = [NEVER, NEVER]
    logits, stops = runtime(x.numpy())
    assert (stops == 3).all() and np.abs(logits - net(x).detach().numpy()).max() <= 1e-4
    logits, stops = runtime(x.numpy()[:0])
    assert logits.shape == (0, 10) and stops.shape == (0,)
    spec = json.loads((tmp_path / "c" / CASCADE_JSON).read_text())
    assert spec["order"] == [0, 2, 1] and spec["thresholds"] == [0.0, 0.0] and spec["temperature"] == 2.0
    assert [s["file"] for s in spec["steps"]] == ["step1.onnx", "step2.onnx", "step3.onnx"]
    assert spec["input"]["input_size"] == 32 and len(spec["input"]["mean"]) == 3 and len(spec["input"]["std"]) == 3
    assert spec["num_classes"] == 10 and spec["fitted"] == {"tolerance": 0.5, "exit": "accuracy", "images": 7}
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        CASCADE_JSON,
        "step1.onnx",
        "step2.onnx",
        "step3.onnx",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the staging folder is gone


def _spy(run, batches):
    def spied(outputs, feeds):
        batches.append(next(iter(feeds.values())).shape[0])
        return run(outputs, feeds)

    return spied


def test_later_steps_run_only_on_the_images_left(tmp_path):
    net = _net(3, 1)
    x = _images(24)
    with torch.no_grad():
        per_path = net.path_logits(x)
    thresholds = _mixed_thresholds(torch.stack(per_path), None)
    export_cascade(net, {"order": [0, 1, 2], "thresholds": thresholds, "temperature": None}, tmp_path / "c")
    runtime, batches = OnnxCascade(tmp_path / "c"), []
    for session in runtime.sessions:
        session.run = _spy(session.run, batches)
    _, stops = runtime(x.numpy())
    assert batches == [24, int((stops > 1).sum()), int((stops > 2).sum())] and 0 < batches[2] < batches[1] < 24


@pytest.mark.parametrize("fault,message", [("logits", "differs from PyTorch by"), ("stops", "at another step")])
def test_a_failed_check_writes_nothing(fault, message, tmp_path, monkeypatch):
    call = OnnxCascade.__call__

    def faulty(self, images):
        logits, stops = call(self, images)
        if fault == "logits":
            return logits + 1e-3, stops
        return logits, np.where(np.arange(len(stops)) == 0, 3 - stops, stops)

    monkeypatch.setattr(OnnxCascade, "__call__", faulty)
    with pytest.raises(NeasError, match=message):
        export_cascade(_net(2, 1), {"order": [0, 1], "thresholds": [0.5]}, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_runtime_takes_a_later_step_on_the_images(tmp_path):
    """A step whose ONNX input is the images (a path exported alone) gets the images left, not all."""
    net = _net(2, 1)
    x = _images(24)
    with torch.no_grad():
        per_path = net.path_logits(x)
    thresholds = _mixed_thresholds(torch.stack(per_path), None)
    export_cascade(net, {"order": [0, 1], "thresholds": thresholds, "temperature": None}, tmp_path / "c")
    export(net.select([1]), "onnx", tmp_path / "c" / "step2.onnx")  # path 1 alone, from the images
    spec = json.loads((tmp_path / "c" / CASCADE_JSON).read_text())
    spec["steps"][1]["input"] = "images"
    del spec["record_sha256"]  # a cascade put together by hand: the schema checks alone
    (tmp_path / "c" / CASCADE_JSON).write_text(json.dumps(spec))
    runtime = OnnxCascade(tmp_path / "c")
    assert runtime.inputs == ["images", "images"]
    got, stops = runtime(x.numpy())
    expected, expected_stops = cascade_predict(torch.stack(per_path), thresholds)
    assert np.array_equal(stops, expected_stops.numpy()) and 1 < stops.sum() < 48
    assert np.abs(got - expected.numpy()).max() <= 1e-4


def _model_file(tmp_path, k: int, cascade: "dict | None"):
    path = tmp_path / "m.safetensors"
    save_ensemble(_net(k, 1), path)
    if cascade is not None:
        update_ensemble_file(path, cascade=cascade)
    return path


def _export(path, out, *extra) -> int:
    return main(["export", "--checkpoint", str(path), "--format", "onnx", "--cascade", "--out", str(out), *extra])


def test_cli_writes_the_stored_cascade(tmp_path, capsys):
    cascade = {"order": [1, 0], "thresholds": [0.11], "tolerance": 0.5, "temperature": None}
    path = _model_file(tmp_path, 2, cascade)
    assert _export(path, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "exported the 2-step cascade (paths [1, 0], thresholds 0.110)" in printed and "same stops" in printed
    spec = json.loads((tmp_path / "out" / CASCADE_JSON).read_text())
    assert spec["order"] == [1, 0] and spec["thresholds"] == [0.11]
    assert _export(path, tmp_path / "out") == 2  # an existing directory needs --force
    assert "already exists; pass --force" in capsys.readouterr().err
    assert _export(path, tmp_path / "out", "--force") == 0


@pytest.mark.parametrize(
    "k,cascade,extra,message",
    [
        (2, None, [], "--cascade needs thresholds fitted by `neas evaluate --cascade`"),
        (2, {"order": [0, 1], "thresholds": [0.5]}, ["--format", "safetensors"], "--cascade needs --format onnx"),
        (2, {"order": [0, 1], "thresholds": [0.5]}, ["--paths", "1"], "drop --paths"),
        (1, {"order": [0], "thresholds": []}, [], "at least 2 paths"),
    ],
)
def test_cli_errors(k, cascade, extra, message, tmp_path, capsys):
    if k == 1:
        space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "num_paths": 1, "split": [0, 0]})
        path = tmp_path / "m.safetensors"
        save_ensemble(build_ensemble(space, EnsembleArch.sample(space, random.Random(0)), 10), path)
        update_ensemble_file(path, cascade=cascade)
    else:
        path = _model_file(tmp_path, k, cascade)
    assert _export(path, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neas: error:") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_input_or_a_file_as_the_directory(tmp_path, capsys):
    path = _model_file(tmp_path, 2, {"order": [0, 1], "thresholds": [0.5]})
    assert _export(path, tmp_path, "--force") == 2
    assert "is or holds an input of this command" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _export(path, tmp_path / "file", "--force") == 2
    assert "is a file; --cascade writes a directory" in capsys.readouterr().err


@pytest.mark.parametrize("temperature", ["hot", -1.0, float("inf")])
def test_a_hand_edited_cascade_temperature_is_one_error_line_naming_the_file(tmp_path, capsys, temperature):
    from safetensors.torch import load_file, save_file

    path = _model_file(tmp_path, 2, {"order": [0, 1], "thresholds": [0.5], "temperature": None})
    with open(path, "rb") as f:  # the header's metadata, edited by hand: the tensors (and their SHA-256) unchanged
        size = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(size))["__metadata__"]
    meta["cascade"] = json.dumps({"order": [0, 1], "thresholds": [0.5], "temperature": temperature})
    save_file(load_file(str(path)), str(path), metadata=meta)
    for argv in (["evaluate", "--checkpoint", str(path), "--no-latency"], ["export", "--checkpoint", str(path),
                 "--format", "onnx", "--cascade", "--out", str(tmp_path / "out")]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cascade: 'temperature' must be" in err[0] and str(path) in err[0], err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-step cascade folder, and the ensemble's weights file beside it (outside the folder)."""
    root = tmp_path_factory.mktemp("exported")
    net = _net(2, 1)
    save_ensemble(net, root / "model.safetensors")
    export_cascade(net, {"order": [1, 0], "thresholds": [0.3], "temperature": None}, root / "c")
    return root


def _tampered(exported, tmp_path, edit) -> Path:
    folder = tmp_path / "c"
    shutil.copytree(exported / "c", folder)
    spec = json.loads((folder / CASCADE_JSON).read_text())
    spec.pop("record_sha256")  # the schema checks alone (an edit that keeps the schema is the hash's, below)
    edit(spec, folder)
    (folder / CASCADE_JSON).write_text(json.dumps(spec))
    return folder


def _outside(spec, folder):
    (folder / "step2.onnx").unlink()
    (folder / "step2.onnx").symlink_to(folder.parent.parent / "model.safetensors")


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s, f: s.pop("thresholds"), "'thresholds' must be 1 finite numbers, got None"),  # fuzz §7: KeyError
        (lambda s, f: s.update(thresholds=["0.5"]), "'thresholds' must be 1 finite numbers"),  # fuzz §7: TypeError
        (lambda s, f: s.update(thresholds=[float("nan")]), "'thresholds' must be 1 finite numbers"),  # §6: never stops
        (lambda s, f: s.update(temperature=0), "'temperature' must be a finite number in [0.001, 1000] or null"),
        (lambda s, f: s.update(temperature=-1), "'temperature' must be a finite number in [0.001, 1000] or null"),
        (lambda s, f: s.update(output_temperature=0), "'output_temperature' must be a finite number in [0.001, 1000]"),
        (lambda s, f: s.update(output_temperature="0.8"), "'output_temperature' must be a finite number"),
        (lambda s, f: s.update(order=[5, 6]), "'order' must order the paths 0..1, got [5, 6]"),
        (lambda s, f: s.update(order=[1, True]), "'order' must order the paths 0..1"),
        (lambda s, f: s["steps"][1].update(path=1), "steps[1] 'path' must be 0, got 1"),
        (lambda s, f: s.update(steps=[]), "'steps' must be a list of K >= 2 objects"),
        (lambda s, f: s["steps"][0].update(input="features"), "steps[0] 'input' must be 'images'"),
        (lambda s, f: s.update(num_classes=0), "'num_classes' must be a positive integer"),
        (lambda s, f: s.update(classes=["a", "b"]), "'classes' must be null or 10 distinct names"),
        (lambda s, f: s["steps"][1].update(file="../../model.safetensors"), "steps[1] 'file' must be 'step2.onnx'"),
        (lambda s, f: s["steps"][0].update(file="/etc/hostname"), "steps[0] 'file' must be 'step1.onnx'"),
        (_outside, "step2.onnx leads outside the cascade's folder"),  # fuzz §7: opened a file outside the folder
        (lambda s, f: (f / "step2.onnx").unlink(), "step2.onnx: no such step file"),  # fuzz §7: onnxruntime traceback
        (lambda s, f: (f / "step2.onnx").write_bytes(b"not onnx"), "step2.onnx: not a readable ONNX step"),
    ],
)
def test_onnx_cascade_refuses_a_cascade_json_outside_its_schema_or_a_step_outside_its_folder(
    exported, tmp_path, edit, message
):
    folder = _tampered(exported, tmp_path, edit)
    with pytest.raises(NeasError) as caught:
        OnnxCascade(folder)
    assert message in str(caught.value), caught.value
    assert str(folder) in str(caught.value)


def test_onnx_cascade_refuses_an_in_schema_edit_of_cascade_json_by_its_record_hash(exported, tmp_path):
    folder = tmp_path / "c"
    shutil.copytree(exported / "c", folder)
    OnnxCascade(folder)  # intact
    spec = json.loads((folder / CASCADE_JSON).read_text())
    (folder / CASCADE_JSON).write_text(json.dumps(spec | {"thresholds": [0.9]}))
    with pytest.raises(NeasError, match="damaged or edited"):
        OnnxCascade(folder)
    del spec["record_sha256"]  # an export from before the hash: the schema checks alone
    (folder / CASCADE_JSON).write_text(json.dumps(spec | {"thresholds": [0.9]}))
    assert OnnxCascade(folder).thresholds == [0.9]


def test_onnx_cascade_stops_the_images_it_was_fitted_on_where_pytorch_does(tmp_path):
    """Fitted thresholds sit between two confidences, so re-scoring the fit set in onnxruntime (float64 mean,
    numpy softmax) stops every image at PyTorch's step (audit 2026-12, cascade item 3)."""
    from neas.ensemble.cascade import fit_thresholds

    net, order = _net(3, 1), [2, 0, 1]
    x = _images(200, seed=9)
    with torch.no_grad():
        in_order = torch.stack([net.path_logits(x)[j] for j in order])
    labels = in_order.mean(0).argmax(-1)
    labels[::4] = (labels[::4] + 1) % 10  # a quarter wrong, so stopping early can cost nothing
    thresholds = fit_thresholds(in_order, labels, [1.0, 2.0, 3.0], 0.05)
    assert all(t < 1 for t in thresholds)  # both steps stop some images
    export_cascade(net, {"order": order, "thresholds": thresholds, "temperature": None}, tmp_path / "c")
    _, stops = OnnxCascade(tmp_path / "c")(x.numpy())
    assert np.array_equal(stops, cascade_predict(in_order, thresholds)[1].numpy())
