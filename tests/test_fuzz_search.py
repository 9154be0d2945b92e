"""Nothing lost, round two (issue 30): budgets checked before training, arch files read as they were
written and no further, crafted sizes refused before any allocation, the ONNX file saying what it expects."""

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from neas.cli import main
from neas.config import from_dict
from neas.report.describe import arch_summary
from neas.space import EnsembleArch, SearchSpace
from neas.supernet.io import FORMAT

from .test_robustness import _one_error_line


def _never_train(monkeypatch):
    """Any supernet training fails the test: the refusal must come first."""
    import neas.recipes.run as run

    def train(*args, **kwargs):
        raise AssertionError("the supernet was trained before the refusal")

    monkeypatch.setattr(run, "train_supernet", train)


def _tiny_arch_file(folder: Path, **extra) -> Path:
    space = SearchSpace.preset("tiny")
    arch = EnsembleArch.sample(space, 0, split=2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "arch.json"
    path.write_text(json.dumps({**arch.to_json(), "space": space.to_dict(), **extra}))
    return path


# --- item 7: budgets ------------------------------------------------------------------------------


def test_an_impossible_budget_is_refused_before_the_supernet_is_trained(tmp_path, capsys, monkeypatch):
    _never_train(monkeypatch)
    code = main(["run", "--out", str(tmp_path / "r"), "search.max_macs=1K"])
    _one_error_line(capsys, code, "no ensemble of the space meets max_macs=1000")
    assert not (tmp_path / "r").exists()


def test_a_negative_budget_is_refused_when_the_config_is_read(tmp_path, capsys, monkeypatch):
    _never_train(monkeypatch)
    config = tmp_path / "neg.yaml"
    config.write_text("space: tiny\ndata: digits\nsearch:\n  max_macs: -5\n")
    code = main(["run", "--config", str(config), "--out", str(tmp_path / "r")])
    _one_error_line(capsys, code, "max_macs: a budget must be >= 0")
    assert not (tmp_path / "r").exists()


def test_a_cascade_on_a_one_path_space_is_refused_before_the_supernet_is_trained(tmp_path, capsys, monkeypatch):
    _never_train(monkeypatch)
    space = {**SearchSpace.preset("tiny").to_dict(), "num_paths": 1, "split": [0, 0], "name": "tiny-k1"}
    (tmp_path / "k1.yaml").write_text(yaml.safe_dump(space))
    code = main(["run", "--out", str(tmp_path / "r"), f"space={tmp_path / 'k1.yaml'}", "retrain.cascade=true"])
    _one_error_line(capsys, code, "retrain.cascade: the space 'tiny-k1' has K = 1 path")
    assert not (tmp_path / "r").exists()


# --- item 8: the arch file's class count ----------------------------------------------------------


def test_arch_costs_use_the_class_count_the_arch_file_was_searched_for(tmp_path, capsys):
    path = _tiny_arch_file(tmp_path, num_classes=10)
    assert main(["arch", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    space = SearchSpace.preset("tiny")
    arch = EnsembleArch.load(path)
    assert printed == json.loads(json.dumps(arch_summary(space, arch, 10)))
    assert printed != json.loads(json.dumps(arch_summary(space, arch, 1000)))
    assert main(["arch", str(path), "--json", "--num-classes", "1000"]) == 0  # the flag still wins
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(arch_summary(space, arch, 1000)))


# --- item 16 and 19: absurd sizes ------------------------------------------------------------------


def _crafted_supernet(path: Path, **space_changes) -> Path:
    space = {**SearchSpace.preset("tiny").to_dict(), **space_changes}
    meta = {
        "format": FORMAT,
        "space": json.dumps(space),
        "shrunk": json.dumps({}),
        "num_classes": "10",
        "classes": json.dumps([str(i) for i in range(10)]),
        "config": json.dumps({"data": "digits", "holdout": 0.25}),
        "epoch": "0",
    }
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path), metadata=meta)
    return path


def test_a_crafted_supernet_declaring_huge_channels_is_refused_before_any_model_is_built(tmp_path, capsys, monkeypatch):
    import neas.supernet.io as io

    def build(*args, **kwargs):
        raise AssertionError("the supernet was built")

    monkeypatch.setattr(io, "Supernet", build)
    folder = tmp_path / "sn"
    folder.mkdir()
    _crafted_supernet(folder / "supernet.safetensors", head_channels=200_000)
    assert (folder / "supernet.safetensors").stat().st_size < 4096
    code = main(["search", "--supernet", str(folder), "--out", str(tmp_path / "s"), "--device", "cpu"])
    _one_error_line(capsys, code, "exceeds 100000 channels")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"input_size": 100_000_000}, "input_size must be at most 4096"),
        ({"width_mult": float("inf")}, "width_mult must be a number in (0, 16]"),
        ({"width_mult": 17.0}, "width_mult must be a number in (0, 16]"),
        ({"stem_channels": 100_001}, "exceeds 100000 channels"),
        ({"stages": [{"channels": 16, "layers": 1001, "stride": 1}], "split": [1, 2]}, "at most 1000 are accepted"),
    ],
)
def test_absurd_space_sizes_are_one_error_line(tmp_path, capsys, changes, fragment):
    space = {**SearchSpace.preset("tiny").to_dict(), **changes}
    path = tmp_path / "space.yaml"
    path.write_text(json.dumps(space))  # JSON is YAML; yaml.safe_dump cannot write inf as .inf portably
    _one_error_line(capsys, main(["space", str(path)]), fragment)


def test_an_absurd_input_size_flag_is_one_error_line(capsys):
    _one_error_line(capsys, main(["arch", "neas-s", "--input-size", "100000000"]), "input_size must be at most 4096")


def test_a_width_mult_of_inf_in_yaml_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "wide.yaml"
    path.write_text(SearchSpace.preset("tiny").to_yaml().replace("width_mult: 1.0", "width_mult: .inf"))
    _one_error_line(capsys, main(["space", str(path)]), "width_mult must be a number in (0, 16], got inf")


# --- item 17: an arch file's space ----------------------------------------------------------------


def test_an_arch_files_space_file_is_resolved_beside_the_arch_file(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "search"
    path = _tiny_arch_file(folder)
    record = json.loads(path.read_text())
    (folder / "myspace.yaml").write_text(SearchSpace.preset("tiny").to_yaml())
    path.write_text(json.dumps({**record, "space": "myspace.yaml"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["arch", str(path), "--json"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("stored", ["secret.txt", "../secret.yaml", "secret.yaml"])
def test_an_arch_files_space_reads_no_other_file_and_echoes_none_of_its_keys(tmp_path, capsys, monkeypatch, stored):
    folder = tmp_path / "search"
    path = _tiny_arch_file(folder)
    for name in ("secret.txt", "secret.yaml"):
        (folder / name).write_text("password_of_alice: hunter2\n")
        (tmp_path / name).write_text("password_of_alice: hunter2\n")
    path.write_text(json.dumps({**json.loads(path.read_text()), "space": stored}))
    monkeypatch.chdir(folder)
    err = _one_error_line(capsys, main(["arch", str(path)]), "")
    assert "password_of_alice" not in err and "hunter2" not in err


# --- item 19: batches and path_acc ----------------------------------------------------------------


@pytest.mark.parametrize(
    "override, fragment",
    [("supernet.batch_size=10000000", "supernet.batch_size"), ("retrain.batch_size=10000000", "retrain.batch_size")],
)
def test_a_batch_larger_than_the_training_part_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch, override, fragment
):
    _never_train(monkeypatch)
    code = main(["run", "--out", str(tmp_path / "r"), override])
    _one_error_line(capsys, code, f"{fragment}: 10000000 x 1 process(es) is more than the")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("path_acc", [[0.5], ["a", "b"], "0.5", [0.5, 2.0], [0.5, True]])
def test_a_hand_edited_path_acc_is_one_error_line(tmp_path, capsys, path_acc):
    path = _tiny_arch_file(tmp_path, path_acc=path_acc)
    _one_error_line(capsys, main(["arch", str(path)]), "field 'path_acc' must be a list of 2 accuracies")


# --- item 21: ONNX metadata -----------------------------------------------------------------------


def test_the_onnx_export_says_what_input_it_expects(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from neas.data.loader import MEAN, STD
    from neas.ensemble.export import export
    from neas.ensemble.io import EnsembleFile
    from neas.ensemble.model import EnsembleNet

    space = SearchSpace.preset("tiny")
    arch = EnsembleArch.sample(space, 0, split=2)
    net = EnsembleNet(space, arch, 3)
    from neas.data.preprocess import Preprocessing

    view = Preprocessing(32, 0.875)  # the model's recorded transform: the metadata reads it
    info = EnsembleFile(space=space, arch=arch, num_classes=3, classes=("cat", "dog", "eel"), preprocessing=view)
    export(net, "onnx", tmp_path / "m.onnx", info=info, temperature=1.5)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["classes"]) == ["cat", "dog", "eel"]
    assert int(props["input_size"]) == 32
    assert json.loads(props["mean"]) == list(MEAN)
    assert json.loads(props["std"]) == list(STD)
    assert float(props["crop_pct"]) == 0.875
    assert EnsembleArch.from_json(props["arch"]) == arch
    assert json.loads(props["temperature"]) == 1.5


# --- item 20: the demo's ensemble -----------------------------------------------------------------


def test_the_demo_searches_only_ensembles_whose_two_paths_differ():
    from neas.config import load_yaml
    from neas.recipes.run import DEMO, RunConfig, stage_configs

    sn, se, _ = stage_configs(from_dict(RunConfig, load_yaml(DEMO)))
    space = SearchSpace.resolve(sn.space)
    assert se.split is not None and max(se.split) < space.num_layers  # a private layer: distinct ops
    for seed in range(20):
        arch = EnsembleArch.sample(space, seed, split=se.split[seed % 2])
        assert len(set(arch.paths)) == 2


def test_a_retrain_batch_larger_than_the_training_part_is_refused_before_its_run_directory_exists(tmp_path, capsys):
    from neas.cli import main
    from neas.space import EnsembleArch, SearchSpace

    space = SearchSpace.preset("tiny")
    arch_file = tmp_path / "arch.json"
    EnsembleArch.sample(space, 1).save(arch_file, space=space.to_dict())
    out = tmp_path / "rt"
    code = main(["retrain", "--arch", str(arch_file), "--data", "digits", "--batch-size", "10000000",
                 "--device", "cpu", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("neas: error: batch_size: 10000000 x 1 process(es) is more than the")
    assert len(err.splitlines()) == 1
    assert not out.exists()
