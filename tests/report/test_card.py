"""The model card of `neas export --format timm` (issue 38, item 2): front matter, numbers and provenance read
from the run's records, every value checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from neas.cli import main
from neas.data.preprocess import Preprocessing
from neas.ensemble.io import load_ensemble, save_ensemble
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError
from neas.report.card import locate, model_card
from neas.space import EnsembleArch, SearchSpace

CLASSES = ("ant", "bee", "cat")


def _eval(k: int) -> dict:
    block = {"top1": 0.5, "top5": 1.0, "nll": 1.1, "ece": 0.05, "brier": 0.6}
    return {
        "split": "test",
        "images": 120,
        "train_images": 900,
        "ensemble": {
            **block,
            "top1": 0.55,
            "calibrated": {"nll": 1.0, "ece": 0.03, "brier": 0.58},
            "selective": {"aurc": 0.2, "augrc": 0.1, "risk_at_80": 0.4, "coverage_at_5_risk": 0.1},
        },
        **{f"path{j}": block for j in range(k)},
        "temperature": {"temperature": 1.3, "images": 100, "nll_before": 1.2, "nll_after": 1.1, "fitted_on": "x"},
        "macs": 600000,
        "paper_flops": 700000,
        "params": 40000,
        "latency_ms": 1.5,
        "latency_device": "cpu (test machine)",
        "ood": {"data": "noise/test", "images": 50, "ensemble": {"msp": {"auroc": 0.8, "fpr95": 0.6}}},
        "cascade": {"top1": 0.54, "mean_macs": 400000.0, "thresholds": [0.7]},
        "corruptions": {"names": ["fog"], "mean": {"ensemble": {"top1": 0.4, "nll": 1.5, "ece": 0.1}}},
    }


def _run(root: Path) -> Path:
    """A `neas run` directory as the pipeline writes it, inside a `neas compare` folder (records by hand)."""
    run = root / "compare" / "neas-seed0"
    space = SearchSpace.preset("tiny")
    arch = EnsembleArch.sample(space, 0, split=2)
    for stage in ("supernet/shrink", "search", "retrain"):
        (run / stage).mkdir(parents=True)
    (run / "config.yaml").write_text("space: tiny\nseed: 4\ndata: imagefolder\n")
    (run / "supernet" / "config.yaml").write_text("epochs: 12\nshrink: diversity\nshrink_every: 3\nholdout: 0.1\n")
    for r, (before, after) in enumerate([(32, 29), (29, 26)]):
        record = {"round": r, "combinations_before": before, "combinations_after": after}
        (run / "supernet" / "shrink" / f"round_{r:02d}.json").write_text(json.dumps(record))
    (run / "search" / "config.yaml").write_text("strategy: evolution\npopulation: 8\ngenerations: 3\nseed: 4\n")
    search = {**arch.to_json(), "supernet_acc": 0.6, "constraints": {"max_macs": 700000}, "evaluations": 24}
    search["calibration"] = {"bn_images": 128, "score_images": 100}
    (run / "search" / "arch.json").write_text(json.dumps(search))
    (run / "retrain" / "config.yaml").write_text("arch: nowhere/arch.json\nrecipe: small\nepochs: 30\nseed: 4\n")
    (run / "retrain" / "eval.json").write_text(json.dumps(_eval(arch.num_paths)))
    net = EnsembleNet(space, arch, len(CLASSES))
    save_ensemble(
        net,
        run / "retrain" / "model.safetensors",
        classes=CLASSES,
        data={"data": "imagefolder", "data_dir": "d"},
        holdout=0.1,
        temperature={"temperature": 1.3},
        preprocessing=Preprocessing(32, 1.0),
    )
    differences = {
        "single": {"top1": {"mean": 0.02, "sd": 0.01, "lo": -0.01, "hi": 0.05, "n": 3, "verdict": "within noise"}}
    }
    compare = {"differences": differences, "rows": {"single": {"what": "the best single network"}}}
    (root / "compare" / "compare.json").write_text(json.dumps(compare))
    return run


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_card_carries_the_records_numbers_and_the_searchs_provenance(tmp_path):
    run = _run(tmp_path)
    sources = locate(run)
    assert sources.retrain == run / "retrain" and sources.arch == run / "search" / "arch.json"
    assert sources.supernet == run / "supernet" and sources.compare == tmp_path / "compare" / "compare.json"
    net, info = load_ensemble(run)
    card = model_card(run, net, info, "my-ensemble", "mit")
    front = _front(card)
    assert front["library_name"] == "timm" and front["license"] == "mit" and "neas" in front["tags"]
    assert front["metrics"] == ["accuracy"]
    scores = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert scores == {"accuracy": 0.55, "nll": 1.1, "ece": 0.05}  # one unit: fractions (ECE 0.05 = 5 %)
    assert "# metric values are plain fractions: accuracy and ECE in [0, 1]" in card.split("\n---\n")[0]
    for text in (
        "| ensemble (raw logits) | 55.00 % | 1.1000 | 5.00 % | 0.6000 |",
        "| ensemble at temperature 1.300 | 55.00 % | 1.0000 | 3.00 % | 0.5800 |",
        "fitted on 100 held-out images",
        "latency 1.50 ms per image (batch 1), measured on cpu (test machine)",
        "0.600M MACs",
        "AURC 0.2000",
        "msp AUROC 0.800",
        "early-exit cascade: top-1 54.00 % at 0.400M MACs",
        "mean over 1 corruptions: top-1 40.00 %",
        "epochs 12, shrink diversity, shrink_every 3, holdout 0.1",
        "2 shrinking round(s): 32 -> 26 operation combinations",
        "budget: max_macs 700000",
        "evolution search: strategy evolution, population 8, generations 3, seed 4",
        "24 ensembles evaluated; held-out top-1 with supernet weights 60.00 %",
        "retraining from scratch: recipe small, epochs 30, seed 4",
        "900 training images; 100 held out of the training split (0.1 of it); 120 test images",
        "scored candidates on 100 held-out images after BN recalibration on 128",
        "centre-crop 32 x 32",
        "pipeline: `neas run`, seed 4",
        "Undetermined against the best single network in top-1",
        "huggingface-cli upload USER/my-ensemble my-ensemble .",
        "divided by the fitted temperature 1.3000",
    ):
        assert text in card, text
    assert "```text\nmy-ensemble: K=2 paths, split point 2" in card  # the arch diagram


@pytest.mark.parametrize(
    ("field", "value"),
    [("latency_ms", -3), ("images", "many"), ("ensemble.nll", float("nan")), ("temperature.temperature", 1e9)],
)
def test_a_bad_value_in_a_record_refuses_the_export_naming_the_file_and_field(tmp_path, capsys, field, value):
    run = _run(tmp_path)
    record = json.loads((run / "retrain" / "eval.json").read_text())
    *outer, key = field.split(".")
    target = record[outer[0]] if outer else record
    target[key] = value
    (run / "retrain" / "eval.json").write_text(json.dumps(record))
    net, info = load_ensemble(run)
    with pytest.raises(NeasError, match=f"eval.json.*{key}"):
        model_card(run, net, info, "m")
    assert main(["export", "--checkpoint", str(run), "--format", "timm", "--out", str(tmp_path / "out")]) == 2
    assert "eval.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_text_from_a_record_cannot_break_the_card(tmp_path):
    run = _run(tmp_path)
    record = json.loads((run / "retrain" / "eval.json").read_text())
    record["latency_device"] = "gpu\n---\n| `x` <script>"
    (run / "retrain" / "eval.json").write_text(json.dumps(record))
    net, info = load_ensemble(run)
    card = model_card(run, net, info, "m")
    assert "measured on gpu --- / 'x' &lt;script&gt;" in card
    assert card.count("\n---\n") == 1  # the front matter's end, and no other


@pytest.mark.slow
def test_a_real_run_exports_a_folder_whose_card_has_the_runs_provenance(tmp_path):
    from ..recipes.test_run import SMALL

    retrain = {"epochs": 2, "batch_size": 64, "holdout": 0.1}  # the pipeline test's run, a shorter retraining
    config = {**SMALL, "compare_random": False, "retrain": retrain}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert (
        main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "timm", "--out", str(tmp_path / "hub")]) == 0
    )
    card = (tmp_path / "hub" / "README.md").read_text()
    for text in (
        "shrinking round(s)",
        "evolution search: strategy evolution",
        "retraining from scratch: recipe small",
        "training images;",
        "measured on cpu",
        "ensemble at temperature",
    ):
        assert text in card, text
    import timm

    model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    net, _ = load_ensemble(tmp_path / "run")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - net(x)).abs().max().item() <= 1e-5
