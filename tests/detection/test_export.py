"""neas.detection.export: the whole RetinaNet as ONNX, checked against PyTorch on sample images."""

import copy

import onnx
import pytest
import torch

from neas.detection import export as detection_export
from neas.detection.export import export_detector_onnx
from neas.detection.model import build_retinanet, ensemble_body
from neas.errors import NeasError

from .test_model import SIZE, _net


def _detector(mode: str = "path:1", seed: int = 0):
    """A tiny detector whose heads give spread-out scores: freshly initialised ones give every
    anchor the prior 0.01, and near-ties could then come out in any order."""
    body, channels = ensemble_body(_net(), mode)
    model = build_retinanet(body, channels, 3, min_size=SIZE, max_size=SIZE, fpn_channels=32, detections_per_img=40)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.head.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.1)
                m.bias.zero_()
    return model.eval()


def _images():
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, SIZE).expand(3, SIZE, SIZE)
    return [torch.rand(3, SIZE, SIZE, generator=gen), ramp.transpose(1, 2).contiguous()]


# EnsembleFeatures._combine checks that the paths' maps have one shape with a set of torch.Size: under
# the ONNX tracer their entries are 0-dim tensors, hashed by identity, so the check fails (neas.ensemble
# .features, not this package's; comparing tuple(int(d) for d in m.shape) passes)


@pytest.mark.parametrize("mode", ["path:1", "mean", "concat"])
def test_onnx_detections_match_pytorch(tmp_path, mode):
    model, images = _detector(mode), _images()
    with torch.no_grad():
        expected = model(images)
    assert all(len(d["scores"]) == 40 for d in expected)
    assert not torch.equal(expected[0]["boxes"], expected[1]["boxes"])
    out = tmp_path / "onnx" / "detector.onnx"
    result = export_detector_onnx(model, out, images)
    assert result["images"] == 2 and result["opset"] == 17
    assert 0 <= result["max_abs_diff_boxes"] <= 1e-3 * SIZE and 0 <= result["max_abs_diff_scores"] <= 1e-3
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["detector.onnx"]  # no temporary file left


def test_a_mismatch_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    model, images = _detector(), _images()
    write = detection_export._write

    def write_another(model, path, image, opset):  # the graph of a slightly different detector
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.head.regression_head.bbox_reg.bias.add_(0.05)
        write(other, path, image, opset)

    monkeypatch.setattr(detection_export, "_write", write_another)
    out = tmp_path / "detector.onnx"
    out.write_text("an earlier export")
    with pytest.raises(NeasError, match=r"ONNX check failed on image 0: .* pixels in boxes .*was not written"):
        export_detector_onnx(model, out, images)
    assert out.read_text() == "an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.onnx"]


def test_bad_arguments_are_refused(tmp_path):
    model = _detector()
    with pytest.raises(NeasError, match="opset: RetinaNet's ONNX export needs opset >= 11, got 9"):
        export_detector_onnx(model, tmp_path / "d.onnx", _images(), opset=9)
    with pytest.raises(NeasError, match=r"images: expected a non-empty list of \(3, H, W\)"):
        export_detector_onnx(model, tmp_path / "d.onnx", [torch.rand(1, 3, SIZE, SIZE)])
    assert list(tmp_path.iterdir()) == []
