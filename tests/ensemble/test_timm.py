"""A found ensemble as a timm model (issue 38, items 1-4): the registered names, the released checkpoints
through the safe loader, the Hub-ready folder and its round trip through timm's offline loader, one
preprocessing read from the metadata alone, one temperature rule in three runtimes, and bad folders."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import neas
from neas.cli import main
from neas.data.preprocess import Preprocessing
from neas.ensemble.io import load_ensemble, save_ensemble
from neas.ensemble.model import EnsembleNet
from neas.ensemble.official import RELEASED_PREPROCESSING
from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace
from neas.space.presets import ARCH_PRESETS

from .test_official import _random_state, released_shapes

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("ant", "bee", "cat")
SIZES = [(32, 32), (40, 36), (50, 64), (24, 24), (32, 32)]  # the input size and others (W, H)
TEMPERATURE = 0.8


def _folder(root: Path) -> list[tuple[Path, int]]:
    """A test split of images of the input size (32) and of other sizes; its files in the order neas reads them."""
    rng = np.random.default_rng(0)
    files = []
    for label, name in enumerate(CLASSES):
        (root / "test" / name).mkdir(parents=True)
        for i, (w, h) in enumerate(SIZES):
            path = root / "test" / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            files.append((path, label))
    return files


def _model(path: Path, data_dir: Path, crop_pct: float) -> EnsembleNet:
    space = SearchSpace.preset("tiny")
    torch.manual_seed(0)
    net = EnsembleNet(space, EnsembleArch.sample(space, 0, split=2), len(CLASSES)).eval()
    with torch.no_grad():  # BN statistics of a trained network, not the identity of a fresh one
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    save_ensemble(
        net,
        path,
        classes=CLASSES,
        data={"data": "imagefolder", "data_dir": str(data_dir)},
        temperature={"temperature": TEMPERATURE, "images": 100, "fitted_on": "held-out part"},
        preprocessing=Preprocessing(32, crop_pct),
    )
    return net


_BUILT: dict = {}


def _export(tmp_path_factory, crop_pct: float) -> dict:
    """A model file, its test folder, `neas evaluate`'s numbers and scores, and its ONNX and timm exports
    (built once per crop)."""
    if crop_pct in _BUILT:
        return _BUILT[crop_pct]
    root = tmp_path_factory.mktemp("timm")
    files = _folder(root / "data")
    _model(root / "model.safetensors", root / "data", crop_pct)
    argv = ["evaluate", "--checkpoint", str(root / "model.safetensors"), "--json", str(root / "eval.json")]
    assert main([*argv, "--save-scores", str(root / "scores.npz"), "--no-latency"]) == 0
    for fmt, out in (("onnx", root / "m.onnx"), ("timm", root / "hub")):
        assert (
            main(["export", "--checkpoint", str(root / "model.safetensors"), "--format", fmt, "--out", str(out)]) == 0
        )
    _BUILT[crop_pct] = {
        "root": root,
        "files": files,
        "eval": json.loads((root / "eval.json").read_text()),
        "scores": dict(np.load(root / "scores.npz")),
        "crop_pct": crop_pct,
    }
    return _BUILT[crop_pct]


@pytest.fixture(scope="module", params=[0.875, 1.0], ids=["crop0.875", "crop1.0"])
def exported(request, tmp_path_factory):
    """The exports of a model evaluated at timm's crop (a model trained on streamed images) and at 1.0 (in memory)."""
    return _export(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """The exports of one model (for the bad-input tests, which need no second crop)."""
    return _export(tmp_path_factory, 0.875)


# ---- item 1: the registered names ------------------------------------------------------------------------


def test_import_neas_registers_the_names_once_timm_is_imported_and_help_never_imports_timm():
    code = (
        "import sys, neas; light = 'timm' in sys.modules or 'torch' in sys.modules; import timm; "
        "print(light, sorted(timm.list_models('neas*')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert out.stdout.strip() == "False ['neas_ensemble', 'neas_l', 'neas_m', 'neas_s']", out.stderr
    assert sorted(timm.list_models("neas*")) == ["neas_ensemble", "neas_l", "neas_m", "neas_s"]  # here too
    help_ = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "neas", "--help"], capture_output=True, text=True, env=_env()
    )
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in help_.stderr.splitlines()}
    assert help_.returncode == 0 and not imported & {"timm", "torch"}


def test_after_import_runs_its_module_whether_the_trigger_comes_before_or_after(tmp_path, monkeypatch):
    from neas.lazy import after_import

    for name in ("trig_a", "trig_b", "hook_a", "hook_b"):
        (tmp_path / f"{name}.py").write_text(
            "" if name.startswith("trig") else "import sys; sys.hooked.append(__name__)\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "hooked", [], raising=False)
    after_import("trig_a", "hook_a")  # not imported yet: runs after its import
    assert sys.hooked == []
    import trig_a  # noqa: F401

    assert sys.hooked == ["hook_a"]
    import trig_b  # noqa: F401

    after_import("trig_b", "hook_b")  # already imported: runs now
    assert sys.hooked == ["hook_a", "hook_b"]
    for name in ("trig_a", "trig_b", "hook_a", "hook_b"):
        sys.modules.pop(name)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.mark.parametrize("name", ["neas_s", "neas_m", "neas_l"])
def test_each_released_name_builds_with_its_pretrained_cfg_and_features(name):
    model = timm.create_model(name).eval()
    assert model.arch == EnsembleArch.preset(name.replace("_", "-")) and model.space.name == "imagenet"
    cfg = model.pretrained_cfg
    assert {k: cfg[k] for k in RELEASED_PREPROCESSING.data_config()} == RELEASED_PREPROCESSING.data_config()
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert cfg["num_classes"] == 1000 and cfg["first_conv"] == "conv_stem"
    assert tuple(cfg["classifier"]) == ("classifiers.0", "classifiers.1")
    assert timm.data.resolve_data_config(model=model)["crop_pct"] == 0.875
    x = torch.randn(2, 3, 64, 64)  # any size: fully convolutional, global pooling
    with torch.no_grad():
        assert model(x).shape == (2, 1000)
        fresh = timm.create_model(name, num_classes=7).eval()
        assert fresh(x).shape == (2, 7) and fresh.get_classifier()[0].out_features == 7
        features = timm.create_model(name, features_only=True, out_indices=(2, 3, 4)).eval()
        maps = features(x)
    assert features.feature_info.reduction() == [8, 16, 32]
    assert features.feature_info.channels() == [40, 112, 160]
    assert [tuple(m.shape) for m in maps] == [(2, 40, 8, 8), (2, 112, 4, 4), (2, 160, 2, 2)]
    assert "num_classes" not in features.pretrained_cfg  # timm's rule for a feature backbone


def test_neas_ensemble_builds_any_arch_and_space_and_its_features_follow_the_mode(tiny):
    arch = EnsembleArch.sample(tiny, 3, split=1)
    model = timm.create_model("neas_ensemble", arch=arch.to_json(), space="tiny", num_classes=5).eval()
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (3, 5)
        mean = timm.create_model("neas_ensemble", arch=arch.to_json(), space="tiny", features_only=True)
        concat = timm.create_model(
            "neas_ensemble", arch=arch.to_json(), space="tiny", features_only=True, feature_mode="concat"
        )
        assert mean.feature_info.reduction() == [2, 4, 8]  # every level of the space by default
        shapes = [tuple(m.shape) for m in mean(x)]
    assert concat.feature_info.channels() == [8, 32, 48]  # after the split point the paths' maps side by side
    assert shapes == [(3, 8, 16, 16), (3, 16, 8, 8), (3, 24, 4, 4)]
    with pytest.raises(NeasError, match="arch"):
        timm.create_model("neas_ensemble", space="tiny")
    with pytest.raises(NeasError, match="out_indices"):
        timm.create_model("neas_ensemble", arch=arch.to_json(), space="tiny", features_only=True, out_indices=(5,))
    with pytest.raises(NeasError, match="pretrained=True needs weights"):
        timm.create_model("neas_m", pretrained=True)


@pytest.fixture(scope="module")
def released_m(tmp_path_factory):
    shapes = released_shapes(ARCH_PRESETS["neas-m"], 10)
    raw, ema = _random_state(shapes, 0), _random_state(shapes, 1)
    path = tmp_path_factory.mktemp("ckpt") / "neas_m.pth.tar"
    args = argparse.Namespace(model="neas_m", lr=0.064)
    torch.save({"state_dict": {f"module.{k}": v for k, v in raw.items()}, "state_dict_ema": ema, "args": args}, path)
    return path, ema


def test_the_released_checkpoint_loads_through_the_safe_loader_and_num_classes_gives_fresh_heads(released_m):
    path, ema = released_m
    expected = {k: v for k, v in ema.items() if ".conv_dwl." not in k and ".bn4." not in k}
    model = timm.create_model("neas_m", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path)))
    own = model.state_dict()
    assert set(own) == set(expected)
    assert all(torch.equal(own[k], v) for k, v in expected.items())  # the EMA weights, every tensor
    fresh = timm.create_model("neas_m", pretrained=True, num_classes=7, pretrained_cfg_overlay=dict(file=str(path)))
    heads = {k for k in expected if k.startswith("classifiers.")}
    assert fresh.num_classes == 7 and fresh.state_dict()["classifiers.0.weight"].shape == (7, 1280)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in expected.items() if k not in heads)
    kept = timm.create_model(
        "neas_m", pretrained=True, temperature=0.5, num_classes=10, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert kept.temperature == 0.5
    kept.reset_classifier(10)
    assert kept.temperature is None  # any fresh heads drop the old heads' temperature
    refit = timm.create_model(
        "neas_m", pretrained=True, temperature=0.5, num_classes=7, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert refit.temperature is None
    feats = timm.create_model(
        "neas_m", pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert torch.equal(feats.body.net.state_dict()["conv_stem.weight"], expected["conv_stem.weight"])


def test_a_file_that_is_no_checkpoint_or_runs_code_is_refused_in_one_line(released_m, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil, junk = tmp_path / "evil.pth.tar", tmp_path / "junk.pth.tar"
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(1)}, "args": Evil()}, evil)
    junk.write_text("not weights\n")
    for path, message in ((evil, "refused"), (junk, "not a checkpoint"), (tmp_path / "none", "no such")):
        with pytest.raises(ValueError, match=message) as info:
            timm.create_model("neas_m", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        assert "\n" not in str(info.value)
    assert not marker.exists()
    with pytest.raises(ValueError, match="does not fit neas_l"):
        timm.create_model(
            "neas_l", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(released_m[0]))
        )


# ---- items 2-4: the folder, its round trip, one preprocessing, one temperature ---------------------------------


def _timm_logits(model, files) -> torch.Tensor:
    """The model on the files, preprocessed by timm's transform of the model's own data config."""
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        return model(torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in files])).double()


def _scores_of(logits: torch.Tensor, files) -> dict:
    labels = torch.tensor([label for _, label in files])
    confidence, pred = logits.softmax(-1).max(-1)
    nll = torch.nn.functional.cross_entropy(logits, labels).item()
    return {
        "pred": pred.numpy(),
        "confidence": confidence.numpy(),
        "top1": (pred == labels).double().mean().item(),
        "nll": nll,
    }


def test_the_timm_folder_round_trip_gives_neas_evaluates_numbers(exported):
    hub, ev, scores = exported["root"] / "hub", exported["eval"], exported["scores"]
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((hub / "config.json").read_text())
    assert config["architecture"] == "neas_ensemble" and config["num_classes"] == 3
    assert config["model_args"]["temperature"] == TEMPERATURE and config["label_names"] == list(CLASSES)
    assert config["pretrained_cfg"]["crop_pct"] == exported["crop_pct"]
    model = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    net, _ = load_ensemble(exported["root"] / "model.safetensors")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - net(x)).abs().max().item() <= 1e-5  # the Python model, the temperature applied
    calibrated = _scores_of(_timm_logits(model, exported["files"]), exported["files"])
    assert calibrated["top1"] == ev["ensemble"]["top1"]
    assert np.array_equal(calibrated["pred"], scores["ensemble_calibrated_pred"])
    assert np.allclose(calibrated["confidence"], scores["ensemble_calibrated_confidence"], atol=1e-5)
    assert math.isclose(calibrated["nll"], ev["ensemble"]["calibrated"]["nll"], abs_tol=1e-5)
    model.temperature = None  # the documented way to raw logits
    raw = _scores_of(_timm_logits(model, exported["files"]), exported["files"])
    assert math.isclose(raw["nll"], ev["ensemble"]["nll"], abs_tol=1e-5)
    assert np.allclose(raw["confidence"], scores["ensemble_confidence"], atol=1e-5)


def _onnx_logits(path: Path, files) -> np.ndarray:
    """The README's recipe, from the ONNX metadata alone (what a deployer writes in 10 lines)."""
    import onnx
    import onnxruntime as ort

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    size, crop = int(meta["input_size"]), float(meta["crop_pct"])
    mean, std = np.array(json.loads(meta["mean"])), np.array(json.loads(meta["std"]))
    batch = []
    for file, _ in files:
        img = Image.open(file).convert("RGB")
        short = math.floor(size / crop)  # the short side, resized (interpolation from the metadata)
        w, h = img.size
        w, h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        img = img.resize((w, h), getattr(Image.Resampling, meta["interpolation"].upper()))
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        pixels = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255
        batch.append(((pixels - mean) / std).transpose(2, 0, 1).astype(np.float32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.stack(batch)})[0].astype(np.float64)


def test_the_onnx_metadata_alone_reproduces_neas_evaluate_on_images_of_every_size(exported):
    pytest.importorskip("onnxruntime")
    files, ev = exported["files"], exported["eval"]
    assert {Image.open(p).size for p, _ in files} == set(SIZES)
    onnx = _scores_of(torch.from_numpy(_onnx_logits(exported["root"] / "m.onnx", files)), files)
    assert onnx["top1"] == ev["ensemble"]["top1"]
    assert np.array_equal(onnx["pred"], exported["scores"]["ensemble_calibrated_pred"])
    assert math.isclose(onnx["nll"], ev["ensemble"]["calibrated"]["nll"], abs_tol=1e-5)
    assert ev["preprocessing"]["crop_pct"] == exported["crop_pct"]


def test_the_python_onnx_and_timm_models_apply_the_temperature_alike(exported, tmp_path):
    pytest.importorskip("onnxruntime")
    root, files = exported["root"], exported["files"][:6]
    net, info = load_ensemble(root / "model.safetensors")
    raw_net, _ = load_ensemble(root / "model.safetensors", calibrated=False)
    model = timm.create_model(f"local-dir:{root / 'hub'}", pretrained=True).eval()
    assert info.temperature_value == net.temperature == model.temperature == TEMPERATURE
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=net))  # the file's data config
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in files])
    with torch.no_grad():
        python, raw, in_timm = net(x), raw_net(x), model(x)
    onnx = torch.from_numpy(_onnx_logits(root / "m.onnx", files)).float()
    torch.testing.assert_close(python, raw / TEMPERATURE, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(in_timm, python, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(onnx, python, atol=1e-4, rtol=1e-4)
    argv = ["export", "--checkpoint", str(root / "model.safetensors"), "--raw-logits", "--format"]
    assert main([*argv, "onnx", "--out", str(tmp_path / "raw.onnx")]) == 0
    assert main([*argv, "timm", "--out", str(tmp_path / "raw")]) == 0
    raw_timm = timm.create_model(f"local-dir:{tmp_path / 'raw'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(raw_timm(x), raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.from_numpy(_onnx_logits(tmp_path / "raw.onnx", files)).float(), raw, atol=1e-4, rtol=1e-4
    )


def _cascade_file(root: Path, to: Path, x: torch.Tensor) -> tuple[Path, torch.Tensor, list[float]]:
    """A copy of the model file with a fitted 2-step cascade (paths [1, 0]; the threshold in the widest gap
    of the middle half of the step-1 confidences on ``x``, raw as `neas evaluate --cascade` fits it), the
    path logits in that order and the thresholds."""
    from neas.ensemble.io import update_ensemble_file

    path = to / "model.safetensors"
    path.write_bytes((root / "model.safetensors").read_bytes())
    net, _ = load_ensemble(path, calibrated=False)
    with torch.no_grad():
        in_order = torch.stack([net.path_logits(x)[k] for k in (1, 0)])
    confidence = in_order[0].double().softmax(-1).max(-1).values.sort().values
    lo, hi = len(confidence) // 4, 3 * len(confidence) // 4
    i = lo + int((confidence[lo + 1 : hi + 1] - confidence[lo:hi]).argmax())
    thresholds = [float((confidence[i] + confidence[i + 1]) / 2)]
    cascade = {"order": [1, 0], "thresholds": thresholds, "tolerance": 0.5, "temperature": None}
    update_ensemble_file(path, cascade=cascade)
    return path, in_order, thresholds


def test_the_cascade_exports_apply_the_temperature_as_the_python_model_does(one, tmp_path, capsys):
    """Both cascade exports (one graph; a folder run by OnnxCascade) return, per image at batch 1, what the
    Python model gives: cascade_predict's logits / T (the full model's own output where an image runs
    every step); with --raw-logits, the raw ones. The stops are the same either way."""
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    from neas.ensemble.cascade import cascade_predict
    from neas.ensemble.cascade_export import OnnxCascade

    net, info = load_ensemble(one["root"] / "model.safetensors")
    assert info.temperature_value == net.temperature == TEMPERATURE
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=net))
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in one["files"]])
    path, in_order, thresholds = _cascade_file(one["root"], tmp_path, x)
    raw, stops = cascade_predict(in_order, thresholds, None)
    assert set(stops.tolist()) == {1, 2}  # images stop at each step
    with torch.no_grad():
        full = net(x)[stops == 2]  # the calibrated Python model, on the images that run every path
    torch.testing.assert_close(raw[stops == 2] / TEMPERATURE, full, atol=1e-5, rtol=1e-5)
    said = ("logits divided by the temperature 0.800)", "raw logits)")
    for extra, expected, t, says in (
        ([], raw / TEMPERATURE, TEMPERATURE, said[0]),
        (["--raw-logits"], raw, None, said[1]),
    ):
        out = tmp_path / f"out{len(extra)}"
        out.mkdir()
        argv = ["export", "--checkpoint", str(path), "--format", "onnx", "--cascade", *extra]
        assert main([*argv, "--single-file", "--out", str(out / "c.onnx")]) == 0
        assert main([*argv, "--out", str(out / "dir")]) == 0
        assert capsys.readouterr().out.count(says) == 2
        meta = {p.key: p.value for p in onnx.load(str(out / "c.onnx")).metadata_props}
        assert json.loads(meta["temperature"]) == t and json.loads(meta["cascade_temperature"]) is None
        folder = OnnxCascade(out / "dir")
        assert folder.output_temperature == t and folder.spec["output_temperature"] == t
        single = ort.InferenceSession(str(out / "c.onnx"), providers=["CPUExecutionProvider"])
        for i in range(len(x)):
            image = x[i : i + 1].numpy()
            for logits, stop in (single.run(None, {"images": image}), folder(image)):
                assert stop.tolist() == [int(stops[i])]
                torch.testing.assert_close(torch.from_numpy(logits), expected[i : i + 1], atol=1e-4, rtol=1e-4)


# ---- bad input ---------------------------------------------------------------------------------------------


def _copy(hub: Path, to: Path) -> Path:
    to.mkdir()
    for f in hub.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c["model_args"].update(temperature=0.5), "temperature"),
        (lambda c: c["model_args"]["arch"].update(split=1), "arch"),
        (lambda c: c["pretrained_cfg"].update(crop_pct=0.5), "crop_pct"),
        (lambda c: c.update(num_classes=4), "num_classes"),
        (lambda c: c.update(architecture="neas_m"), "neas_m"),
    ],
    ids=["temperature", "arch", "crop", "classes", "architecture"],
)
def test_a_folder_whose_config_does_not_match_its_weights_is_one_line_of_error(one, tmp_path, capsys, edit, field):
    bad = _copy(one["root"] / "hub", tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    edit(config)
    (bad / "config.json").write_text(json.dumps(config))
    before = sorted(p.name for p in bad.iterdir())
    with pytest.raises(ValueError, match=field) as info:
        timm.create_model(f"local-dir:{bad}", pretrained=True)
    assert "\n" not in str(info.value)
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neas: error:") and field in err[0]
    assert sorted(p.name for p in bad.iterdir()) == before  # nothing written


def test_weights_of_another_model_in_the_folder_are_refused(one, tmp_path):
    bad = _copy(one["root"] / "hub", tmp_path / "bad")
    space = SearchSpace.preset("tiny")
    other = EnsembleNet(space, EnsembleArch.sample(space, 5, split=3), len(CLASSES))
    tensors = {k: v for k, v in other.state_dict().items()}
    from safetensors.torch import save_file

    save_file(tensors, str(bad / "model.safetensors"))  # plain timm weights: no neas record to compare
    with pytest.raises(ValueError, match="do not fit the model its config.json describes") as info:
        timm.create_model(f"local-dir:{bad}", pretrained=True)
    assert "\n" not in str(info.value)


def test_export_refuses_before_writing(one, tmp_path, capsys):
    model = str(one["root"] / "model.safetensors")
    existing = tmp_path / "there"
    existing.mkdir()
    cases = [
        (["--format", "onnx", "--license", "mit", "--out", str(tmp_path / "x.onnx")], "--license is for"),
        (["--format", "timm", "--license", "a b", "--out", str(tmp_path / "y")], "--license"),
        (["--format", "timm", "--out", str(existing)], "already exists"),
    ]
    for argv, message in cases:
        assert main(["export", "--checkpoint", model, *argv]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"] and not list(existing.iterdir())


def test_neas_reads_the_folder_too(exported):
    net, info = neas.load_ensemble(exported["root"] / "hub")
    assert info.classes == CLASSES and net.temperature == TEMPERATURE
    assert net.pretrained_cfg["crop_pct"] == exported["crop_pct"]


def test_a_released_checkpoint_exports_to_a_folder_that_timm_loads_back(released_m, tmp_path):
    out = tmp_path / "neas-m"
    argv = ["export", "--official-checkpoint", str(released_m[0]), "--arch", "neas-m", "--format", "timm"]
    assert main([*argv, "--out", str(out)]) == 0
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    direct = timm.create_model(
        "neas_m", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(released_m[0]))
    )
    assert loaded.pretrained_cfg["crop_pct"] == 0.875 and loaded.pretrained_cfg["input_size"] == (3, 224, 224)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), direct.eval()(x))
    card = (out / "README.md").read_text()
    assert "released by the authors of NEAS" in card and "neas's safe loader" in card


def test_a_folder_loads_with_fresh_heads_or_as_multi_scale_features(one):
    hub = f"local-dir:{one['root'] / 'hub'}"
    whole = timm.create_model(hub, pretrained=True).state_dict()
    fresh = timm.create_model(hub, pretrained=True, num_classes=7)
    assert fresh.num_classes == 7 and fresh.state_dict()["classifiers.1.weight"].shape[0] == 7
    assert fresh.temperature is None  # fitted to the old heads: fresh heads return raw logits
    assert all(torch.equal(v, whole[k]) for k, v in fresh.state_dict().items() if not k.startswith("classifiers."))
    features = timm.create_model(hub, pretrained=True, features_only=True).eval()
    assert features.feature_info.reduction() == [2, 4, 8]
    with torch.no_grad():
        assert [m.shape[1] for m in features(torch.randn(1, 3, 32, 32))] == features.feature_info.channels()
