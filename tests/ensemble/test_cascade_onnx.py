"""The cascade as one ONNX graph (issue 37 item 5): the later steps inside If nodes, per image the PyTorch cascade."""

import json

import numpy as np
import pytest
import torch

from neas.cli import main
from neas.ensemble.cascade import cascade_predict, fit_thresholds
from neas.ensemble.cascade_onnx import FORMAT, export_cascade_onnx
from neas.ensemble.io import save_ensemble, update_ensemble_file
from neas.errors import NeasError

from .test_cascade_export import _model_file, _net

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _fitted(net, order, temperature, n: int = 160):
    """Images over a wide range of contrasts, their path logits in ``order`` and thresholds fitted on them
    by :func:`fit_thresholds` (labels: the full ensemble's predictions, tolerance 10 points)."""
    contrast = torch.logspace(0, 4, n, base=2).view(-1, 1, 1, 1)
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * contrast
    with torch.no_grad():
        in_order = torch.stack([net.path_logits(x)[j] for j in order])
    k = len(order)
    return x, in_order, fit_thresholds(in_order, in_order.mean(0).argmax(-1), list(range(1, k + 1)), 0.1, temperature)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "k,split,order,temperature,opset",
    [(2, 1, [1, 0], None, 17), (3, 1, [2, 1, 0], 0.7, 17), (3, 0, [2, 1, 0], None, 11), (3, 2, [2, 0, 1], 1.5, 18)],
)
def test_single_file_equals_the_pytorch_cascade_per_image_at_batch_1(k, split, order, temperature, opset, tmp_path):
    net = _net(k, split)
    x, in_order, thresholds = _fitted(net, order, temperature)
    expected, expected_stops = cascade_predict(in_order, thresholds, temperature)
    assert set(expected_stops.tolist()) == set(range(1, k + 1))  # the fitted thresholds stop images at every step
    checked = export_cascade_onnx(
        net, {"order": order, "thresholds": thresholds, "temperature": temperature}, tmp_path / "m.onnx", opset=opset
    )
    assert checked["max_diff"] <= 1e-4 and len(checked["fitted_images"]) == k
    assert all(n > 0 for n in checked["every_step_images"])
    session = _session(tmp_path / "m.onnx")
    for i in range(len(x)):  # batch 1, image by image, on the images the thresholds were fitted on
        logits, stops = session.run(None, {"images": x[i : i + 1].numpy()})
        assert stops.tolist() == [int(expected_stops[i])], i
        assert np.abs(logits - expected[i : i + 1].numpy()).max() <= 1e-4, i
    logits, stops = session.run(None, {"images": x.numpy()})  # and all of them in one batch
    assert np.array_equal(stops, expected_stops.numpy()) and np.abs(logits - expected.numpy()).max() <= 1e-4
    logits, stops = session.run(None, {"images": x[:0].numpy()})
    assert logits.shape == (0, 10) and stops.shape == (0,)


def _ops(graph) -> list[str]:
    return [node.op_type for node in graph.node]


def test_later_steps_sit_inside_nested_if_nodes_and_the_cascade_is_in_the_metadata(tmp_path):
    net, order = _net(3, 1), [2, 0, 1]
    cascade = {"order": order, "thresholds": [0.3, 0.2], "temperature": 0.5, "tolerance": 0.5, "images": 7}
    export_cascade_onnx(net, cascade, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # nothing else left behind
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits", "stops"]
    (if2,) = [node for node in model.graph.node if node.op_type == "If"]  # one If at the top: step 2
    then2 = next(a.g for a in if2.attribute if a.name == "then_branch")
    (if3,) = [node for node in then2.node if node.op_type == "If"]  # step 3 nested inside step 2's branch
    then3 = next(a.g for a in if3.attribute if a.name == "then_branch")
    assert _ops(model.graph).count("Conv") and _ops(then2).count("Conv") and _ops(then3).count("Conv")
    assert "If" not in _ops(then3)
    # every step's convolutions run where they belong: step 1 (trunk + its path) at the top, the others inside
    assert all(node.input[0].startswith("step1/") or node.input[0] == "images" for node in model.graph.node
               if node.op_type == "Conv")  # fmt: skip
    assert all(n.name.startswith("step2/") for n in then2.node if n.op_type == "Conv")
    assert all(n.name.startswith("step3/") for n in then3.node if n.op_type == "Conv")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["cascade_format"] == FORMAT
    assert json.loads(meta["cascade_order"]) == order and json.loads(meta["cascade_thresholds"]) == [0.3, 0.2]
    assert json.loads(meta["cascade_temperature"]) == 0.5 and json.loads(meta["temperature"]) is None
    # how it was fitted, exit rule included, as the multi-file cascade.json's "fitted" records it
    assert json.loads(meta["cascade_fitted"]) == {"tolerance": 0.5, "exit": "accuracy", "images": 7}
    assert meta["input_size"] == "32" and "stops" in meta["output"]


@pytest.mark.parametrize("fault,message", [("logits", "differ from PyTorch's cascade by"), ("stops", "another step")])
def test_a_failed_check_writes_nothing(fault, message, tmp_path, monkeypatch):
    from neas.ensemble import cascade_onnx

    made = cascade_onnx._session

    class Faulty:
        def __init__(self, model):
            self.session = made(model)

        def run(self, outputs, feeds):
            logits, stops = self.session.run(outputs, feeds)
            if fault == "logits":
                return logits + 1e-3, stops
            return logits, np.where(np.arange(len(stops)) == 0, 3 - stops, stops)

    monkeypatch.setattr(cascade_onnx, "_session", Faulty)
    with pytest.raises(NeasError, match=message):
        export_cascade_onnx(_net(2, 1), {"order": [0, 1], "thresholds": [0.1]}, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def _export(path, out, *extra) -> int:
    return main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(out), *extra])


def test_cli_writes_one_file(tmp_path, capfd):
    """... and nothing on stderr: no warning from the exporter or from onnxruntime's optimizer (which
    warned at every session about a subgraph's outer-scope Cast in an earlier composition)."""
    net, path = _net(2, 1), tmp_path / "m.safetensors"
    _, _, thresholds = _fitted(net, [1, 0], None)
    save_ensemble(net, path)
    update_ensemble_file(path, cascade={"order": [1, 0], "thresholds": thresholds, "tolerance": 10.0})
    out = tmp_path / "m.onnx"
    assert _export(path, out, "--cascade", "--single-file") == 0
    printed, err = capfd.readouterr()
    assert err == ""
    assert f"exported the 2-step cascade (paths [1, 0], thresholds {thresholds[0]:.3f}) as one ONNX graph" in printed
    assert "same stops" in printed and "with the fitted thresholds" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.safetensors"]
    session = _session(out)
    assert session.get_outputs()[1].name == "stops" and session.run(None, {"images": np.zeros((1, 3, 32, 32), "f")})
    assert capfd.readouterr().err == ""
    assert _export(path, out, "--cascade", "--single-file") == 2  # an existing file needs --force
    assert "already exists; pass --force" in capfd.readouterr().err
    assert _export(path, out, "--cascade", "--single-file", "--force") == 0


@pytest.mark.parametrize(
    "extra,given",
    [
        (["--single-file"], "got no --cascade"),
        (["--single-file", "--cascade", "--format", "safetensors"], "got --format safetensors"),
        (["--single-file", "--format", "safetensors"], "got --format safetensors and no --cascade"),
    ],
)
def test_single_file_without_cascade_or_onnx_is_one_error_line_before_loading(
    extra, given, tmp_path, capsys, monkeypatch
):
    from neas.recipes import tools

    path = _model_file(tmp_path, 2, {"order": [0, 1], "thresholds": [0.5]})
    monkeypatch.setattr(tools, "load_model", lambda *a: pytest.fail("loaded the model before checking the options"))
    assert _export(path, tmp_path / "m.onnx", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neas: error: --single-file") and given in err[0], err
    assert "--cascade and --format onnx" in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_a_step_the_fitted_thresholds_never_stop_at_is_checked_with_other_thresholds_and_named(tmp_path, capsys):
    """Threshold 2 after step 1 (above any softmax): no image stops there with the fitted thresholds, so the
    check with thresholds that stop images at every step is what exercises that branch; the line says so."""
    path = _model_file(tmp_path, 3, {"order": [2, 0, 1], "thresholds": [2.0, 0.2], "temperature": None})
    assert _export(path, tmp_path / "m.onnx", "--cascade", "--single-file") == 0
    printed = capsys.readouterr().out
    assert "(stopping at steps 1..3: 0, " in printed and "none can stop at step 1 with them" in printed
    assert "12 with thresholds that stop images at every step" in printed
    session = _session(tmp_path / "m.onnx")
    _, stops = session.run(None, {"images": np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype("f")})
    assert (stops > 1).all()


def test_the_check_skips_an_image_whose_confidence_sits_on_a_threshold(monkeypatch):
    """Another runtime's last bit may stop such an image on the other side: the check does not judge by it."""
    from neas.ensemble import cascade_onnx

    monkeypatch.setattr(cascade_onnx, "_PER_STEP", 100)  # every eligible image
    in_order = torch.randn(2, 12, 10, generator=torch.Generator().manual_seed(0)) * 3
    confidence = in_order[0].double().softmax(-1).max(-1).values
    on = int(confidence.argsort()[6])  # a middle one: some images stop at each step
    index, counts = cascade_onnx._chosen(in_order, [float(confidence[on])], None)
    assert on not in index.tolist() and len(index) == 11 and min(counts) > 0
    index, _ = cascade_onnx._chosen(in_order, [float(confidence[on]) - 1e-3], None)  # clear of it: eligible
    assert on in index.tolist()
