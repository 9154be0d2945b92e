"""Nothing lost, nothing silently wrong: a run never deletes or overwrites what is not its own, resume has no
dead ends, bad data is named rather than used, and a table of bad inputs run against every subcommand."""

import fcntl
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from neas.cli import main
from neas.config import from_dict
from neas.errors import NeasError
from neas.recipes.train_supernet import SupernetConfig, train_supernet
from neas.rundir import prepare_run_dir, release_run_dir
from neas.runfiles import MARKER

from .helpers import BILLION_LAUGHS, Killed, tiny_supernet


def _snapshot(root: Path, skip=()) -> dict:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not any(str(p).startswith(str(s)) for s in skip)
    }


def _one_error_line(capsys, code, fragment=""):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("neas: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err, err
    assert fragment in err, err
    return err


def _tiny(out, **kw):
    return from_dict(
        SupernetConfig, tiny_supernet(**{"out": str(out), "epochs": 2, "shrink_samples": 2, "probe_images": 32, **kw})
    )


def _folder(root, split, classes, n=3):
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(root / split / c / f"{i}.png")
    return root


# --- data loss -----------------------------------------------------------------------------


def test_resume_never_deletes_what_it_did_not_create(tmp_path, capsys):
    (tmp_path / "v" / "supernet").mkdir(parents=True)
    (tmp_path / "v" / "supernet" / "notes.txt").write_text("precious")
    _one_error_line(capsys, main(["run", "--out", str(tmp_path / "v"), "--resume"]), "not a neas run directory")
    assert (tmp_path / "v" / "supernet" / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["supernet"]  # nothing written into it either


def test_a_foreign_stage_folder_inside_a_run_is_refused_not_deleted(tmp_path, capsys):
    from neas.pipeline import run_stage

    stage = tmp_path / "run" / "supernet"
    stage.mkdir(parents=True)
    (stage / "notes.txt").write_text("precious")
    with pytest.raises(NeasError, match="not a neas run directory"):
        run_stage(stage, ["supernet.safetensors"], train_supernet, _tiny(stage), "supernet")
    assert (stage / "notes.txt").read_text() == "precious"


def test_a_run_directory_records_its_kind_and_is_refused_while_another_process_holds_it(tmp_path):
    run = prepare_run_dir(tmp_path / "r", False, _tiny(tmp_path / "r"), "train-supernet")
    assert json.loads((run / MARKER).read_text())["kind"] == "train-supernet"
    release_run_dir(run)
    other = open(run / ".neas.lock", "a+")  # noqa: SIM115 - another process holding the lock, closed below
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    other.seek(0), other.truncate(), other.write("4242\n"), other.flush()
    try:
        with pytest.raises(NeasError, match=r"in use by another neas process \(PID 4242\)"):
            train_supernet(_tiny(run, resume=True))
    finally:
        other.close()


# --- resume dead-ends ----------------------------------------------------------------------


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume(tmp_path, capsys, kill_after):
    """... even with a corrected option: nothing of the first attempt is kept."""
    import neas.train.recipe as training

    out = tmp_path / "run"
    restore = kill_after(training, "save_checkpoint", after=1, instead=lambda *a, **k: None)
    with pytest.raises(Killed):
        train_supernet(_tiny(out))
    restore()
    assert not (out / "state.json").exists()
    assert (out / MARKER).exists()
    with pytest.raises(NeasError, match="already exists: pass --resume"):
        train_supernet(_tiny(out))
    train_supernet(_tiny(out, resume=True, lr=0.1))  # a corrected option: accepted, there is nothing to continue
    assert (out / "supernet.safetensors").is_file()
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_resume_accepts_the_same_run_spelled_or_placed_differently(tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    train_supernet(_tiny("o", epochs=1))
    train_supernet(_tiny("./o", epochs=1, resume=True))
    train_supernet(_tiny(str(tmp_path / "o"), epochs=1, resume=True))
    shutil.copytree(tmp_path / "o", tmp_path / "moved")
    train_supernet(_tiny(str(tmp_path / "moved"), epochs=1, resume=True))
    with pytest.raises(NeasError, match=r"config differs .*epochs: 1 -> 3"):
        train_supernet(_tiny("o", epochs=3, resume=True))


def test_a_moved_pipeline_resumes_every_stage_and_old_relative_paths_keep_their_meaning(tmp_path, monkeypatch):
    import shutil

    from neas.recipes.search import SearchConfig

    def stage(root, **kw):
        return from_dict(SearchConfig, {"supernet": f"{root}/supernet", "out": f"{root}/search", **kw})

    (tmp_path / "a" / "supernet").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    prepare_run_dir("search", False, stage("."), "search")  # started with relative paths, from inside the run
    release_run_dir(Path("search"))
    Path("search/state.json").write_text("{}")  # it has a checkpoint: its config is checked
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    for root in (tmp_path / "a", tmp_path / "b", "b"):  # the same run, and its copy: the stage's paths moved with it
        prepare_run_dir(f"{root}/search", True, stage(root), "search")
        release_run_dir(Path(f"{root}/search"))
    with pytest.raises(NeasError, match=r"config differs .*supernet: 'b/supernet' -> "):  # another supernet: refused
        prepare_run_dir(
            f"{tmp_path}/b/search", True, stage(tmp_path / "b", supernet=str(tmp_path / "a" / "supernet")), "search"
        )
    # "data" meant a/data when the run was resumed from inside a/; from tmp_path the same spelling is another folder
    monkeypatch.chdir(tmp_path / "a")
    Path("search/state.json").unlink()  # restarted in place (a new config) from inside a/
    prepare_run_dir("search", True, stage(".", data_dir="data"), "search")
    release_run_dir(Path("search"))
    Path("search/state.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "a" / "data").mkdir()
    with pytest.raises(NeasError, match="data_dir: 'data' -> 'data'"):
        prepare_run_dir("a/search", True, stage("a", data_dir="data"), "search")
    prepare_run_dir("a/search", True, stage("a", data_dir="a/data"), "search")
    release_run_dir(Path("a/search"))


def test_a_run_takes_a_corrected_section_for_a_stage_that_has_not_started(tmp_path):
    from neas.pipeline import run_stage
    from neas.recipes.run import NOT_COMPARED, RunConfig, stage_configs

    run = tmp_path / "r"
    cfg = from_dict(RunConfig, {"out": str(run), "retrain": {"epochs": 3}})
    prepare_run_dir(run, False, cfg, "run", ignore=())
    release_run_dir(run)
    corrected = from_dict(RunConfig, {"out": str(run), "retrain": {"epochs": 5}})
    prepare_run_dir(run, True, corrected, "run", ignore=NOT_COMPARED)
    release_run_dir(run)
    # a finished stage is never silently reused under settings it was not made with
    retrain_cfg = stage_configs(corrected)[2]
    done = run / "retrain"
    prepare_run_dir(done, False, stage_configs(cfg)[2], "retrain")
    release_run_dir(done)
    (done / "eval.json").write_text("{}")
    with pytest.raises(NeasError, match="epochs: 3 -> 5"):
        run_stage(done, ["eval.json"], lambda c: pytest.fail("ran"), retrain_cfg, "retrain")
    run_stage(
        done, ["eval.json"], lambda c: pytest.fail("ran"), stage_configs(cfg)[2], "retrain"
    )  # same settings: skipped


def test_a_restarted_run_keeps_no_metric_lines_of_the_attempt_it_replaces(tmp_path):
    from neas.rundir import truncate_metrics

    run = tmp_path / "s"
    prepare_run_dir(run, False, _tiny(run), "supernet")
    release_run_dir(run)
    (run / "metrics.jsonl").write_text('{"generation": 0}\n{"generation": 1}\n')
    prepare_run_dir(run, True, _tiny(run), "supernet")  # no state.json: starts over in place
    assert not (run / "metrics.jsonl").exists()
    (run / "metrics.jsonl").write_text('{"generation": 0}\n{"generation": 1}\n{"generation": 2}\n')
    truncate_metrics(run, 1, "generation")  # a resumed search redoes generation 2
    assert [json.loads(l)["generation"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_rank_and_ablate_outputs_are_never_someone_elses_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    _one_error_line(
        capsys,
        main(["ablate", "split", "--arch", "neas-s", "--out", str(tmp_path / "mine")]),
        "not a neas ablate split directory",
    )
    from neas.rundir import claim_dir

    with pytest.raises(NeasError, match="not a neas rank directory"):
        claim_dir(tmp_path / "mine", "rank")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    claim_dir(tmp_path / "r", "rank")
    release_run_dir(tmp_path / "r")
    claim_dir(tmp_path / "r", "rank")  # its own: reused
    release_run_dir(tmp_path / "r")
    with pytest.raises(NeasError, match="is a rank directory, not a ablate split one"):
        claim_dir(tmp_path / "r", "ablate split")


def test_a_forced_export_that_fails_verification_keeps_the_old_file(tmp_path, monkeypatch):
    from neas.ensemble import export as export_module
    from neas.ensemble.model import EnsembleNet
    from neas.space import SearchSpace, resolve_arch_and_space

    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    monkeypatch.setattr(
        export_module, "_onnx", lambda net, path, x, opset, metadata: (Path(path).write_bytes(b"bad"), net(x) + 1)[1]
    )
    with pytest.raises(NeasError, match="export check failed"):
        arch, space = resolve_arch_and_space("neas-s", None)
        export_module.export(
            EnsembleNet(SearchSpace.resolve("cifar") if space is None else space, arch, 10), "onnx", out
        )
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# --- silent wrong results ------------------------------------------------------------------


def test_test_classes_are_matched_to_the_training_classes_by_name(tmp_path, capsys):
    root = _folder(_folder(tmp_path / "d", "train", ["a", "b"]), "test", ["a", "c"])
    code = main(
        [
            "retrain",
            "--data",
            "imagefolder",
            "--data-dir",
            str(root),
            "--out",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "--arch",
            str(_arch_file(tmp_path)),
        ]
    )
    _one_error_line(capsys, code, "classes do not match the training classes (missing ['b'], unexpected ['c'])")


def _arch_file(tmp_path):
    from neas.space import EnsembleArch, SearchSpace

    space = SearchSpace.preset("tiny")
    path = tmp_path / "arch.json"
    EnsembleArch.sample(space, 0).save(path, space=space.to_dict())
    return path


def test_unknown_splits_are_refused_and_image_folders_skip_hidden_or_empty_ones_and_need_2_classes(tmp_path, caplog):
    from neas.data import load_dataset

    with pytest.raises(NeasError, match="digits has the splits train and test, not 'tset'"):
        load_dataset("digits", "tset", 16)
    root = _folder(tmp_path / "d", "train", ["a", "b"])
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "empty").mkdir()
    data = load_dataset("imagefolder", "train", 16, root)
    assert data.classes == ["a", "b"]
    assert "hidden folders .ipynb_checkpoints" in caplog.text
    assert "without images: empty" in caplog.text
    single = _folder(tmp_path / "s", "train", ["only"])
    with pytest.raises(NeasError, match="at least 2 are needed"):
        load_dataset("imagefolder", "train", 16, single)


# --- the fuzz table: every subcommand, bad inputs ------------------------------------------

BAD = [
    (["train-supernet", "--shrink-beta", "nan"], "shrink_beta must be a finite number >= 0"),
    (["train-supernet", "--shrink-beta", "-1"], "shrink_beta"),
    (["train-supernet", "--shrink-gamma", "inf"], "shrink_gamma"),
    (["train-supernet", "--holdout", "0"], "holdout must be in (0, 1)"),
    (["train-supernet", "--lr", "inf"], "lr must be in (0, 100]"),
    (["train-supernet", "--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
    (["train-supernet", "--momentum", "1.5"], "momentum must be in [0, 1)"),
    (["train-supernet", "--device", "tpu"], "device: 'tpu' is not"),
    (["train-supernet", "--device", "cuda"], "no CUDA GPU"),
    (["train-supernet", "--epochs", "0"], "epochs must be at least 1"),
    (["train-supernet", "--config", "{yaml_bad}"], "malformed YAML"),
    (["train-supernet", "--config", "{latin1}"], "not a UTF-8 text file"),
    (["search", "--evaluations", "0"], "evaluations must be at least 1"),
    (["search", "--val-images", "0"], "val_images must be at least 1"),
    (["search", "--max-macs", "nan"], "must be a finite number"),
    (["search", "--strategy", "genetic"], "strategy: unknown 'genetic'"),
    (["retrain", "--erase-prob", "5"], "erase_prob must be in [0, 1]"),
    (["retrain", "--holdout", "1"], "holdout must be in [0, 1)"),
    (["retrain", "--label-smoothing", "2"], "label_smoothing must be in [0, 1)"),
    (["retrain", "--lr-per-2048", "nan"], "lr_per_2048 must be in (0, 100]"),
    (["retrain", "--randaugment", "foo"], "randaugment: 'foo' is not a timm RandAugment policy"),
    (["train-supernet", "--lr", "1e300"], "lr must be in (0, 100]"),
    (["search", "--p-split", "2"], "p_split must be in [0, 1]"),
    (["search", "--mutations", "-1"], "mutations must not be negative"),
    (["train-supernet", "--seed", "-3"], "seed must be in 0..2147483647"),
    (["train-supernet", "--shrink-gamma", "1000"], "shrink_gamma must be in [0, 50]"),
    (["arch", "neas-s", "--input-size", "1"], "input_size must be at least 8"),
    (["search", "--supernet", "{file}"], "is a file, not a train-supernet run directory"),
    (["ablate", "homo-hetero", "--arch", "neas-s", "--out", "{tmp}/hh", "--epochs", "0"], "epochs must be at least 1"),
    (["ablate", "split", "--arch", "{missing}", "--out", "{tmp}/sp"], ""),
    (["evaluate", "--batch-size", "0"], "batch_size must be at least 1"),
    (["evaluate", "--checkpoint", "{missing}"], ""),
    (["export", "--format", "onnx", "--out", "{tmp}/m.onnx", "--opset", "3"], "opset must be in 9..21"),
    (["export", "--format", "onnx", "--out", "{tmp}/m.onnx", "--opset", "999"], "opset must be in 9..21"),
    (["rank", "--supernet", "{tmp}", "--num-archs", "1"], "num_archs must be at least 3"),
    (["subimagenet", "--imagenet", "{tmp}", "--out", "{tmp}/sub", "--classes", "0"], "classes must be at least 1"),
    (["carve-test", "{tmp}", "--out", "{tmp}/c", "--test-fraction", "1.5"], "test_fraction must be in (0, 1)"),
    (["latency-table", "--space", "tiny", "--out", "{tmp}/l.json", "--repeats", "0"], "repeats must be at least 1"),
    (["arch", "neas-x"], "neas-x"),
    (["space", "huge"], "huge"),
    (["report", "{missing}"], ""),
    (["run", "--config", "{missing}"], "no such file"),
    (["run", "supernet.epochs.x=3"], "the supernet stage has no key 'epochs.x'"),
    (["ablate", "search", "--run", "{missing}", "--out", "{tmp}/ab"], "no such directory"),
    (["ablate", "paths", "--config", "{missing}", "--out", "{tmp}/ap"], ""),
    (["train-supernet", "--out", "/proc/neas-cannot-write-here"], ""),  # an unwritable output
    (["train-supernet", "--out", "{file}"], "is a file, not a directory"),
    (["latency-table", "--space", "tiny", "--out", "{file}"], "already exists; pass --force"),
    (["rank", "--supernet", "{missing}", "--out", "{tmp}"], "supernet: no such file or directory"),
    # round two (issue 30): configs, overrides, argparse, budgets, sizes
    (["train-supernet", "--config", "{dup}"], "duplicate key 'space'"),
    (["train-supernet", "--config", "{bomb}"], "alias bomb"),
    (["search", "--config", "{nan_budget}"], "max_macs:"),
    (["run", "--out", "{tmp}/run", "search.max_macs=1K"], "no ensemble of the space meets max_macs=1000"),
    (["run", "--out", "{tmp}/run", "search.max_macs=-5"], "a budget must be >= 0"),
    (["run", "--out", "{tmp}/run", "retrain=5"], "(in override 'retrain=5')"),
    (["train-supernet", "epochs=!!python/object:os.system"], "python/object"),
    (["train-supernet", "download=off"], "expected true or false, got 'off'"),
    (["train-supernet", "holdout=1e-300"], "holdout must be at least 0.01"),
    (["train-supernet", "--warmup-epochs", "100", "--epochs", "1"], "warmup_epochs (100) must be less than"),
    (["train-supernet", "--epoch", "3"], "unrecognized arguments: --epoch"),
    (["train-supernet", "--epochs", "1.5"], "--epochs: expected an integer, got '1.5'"),
    (["train-supernet", "--out", ""], "out: an empty path"),
    (["export", "--format", "onnx", "x"], "required: --out"),
    (["trian"], "did you mean"),
    (["arch", "neas-s", "--input-size", "100000000"], "input_size"),
    (["report", "{file}"], ""),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, argv, fragment):
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    (tmp_path / "latin1.yaml").write_bytes("epochs: 3 # caf\xe9\n".encode("latin-1"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dup.yaml").write_text("space: tiny\nspace: cifar\n")
    (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "nan.yaml").write_text("max_macs: .nan\n")
    values = {
        "{dup}": str(tmp_path / "dup.yaml"),
        "{bomb}": str(tmp_path / "bomb.yaml"),
        "{nan_budget}": str(tmp_path / "nan.yaml"),
        "{yaml_bad}": str(tmp_path / "bad.yaml"),
        "{latin1}": str(tmp_path / "latin1.yaml"),
        "{tmp}": str(tmp_path),
        "{missing}": str(tmp_path / "nothere"),
        "{file}": str(tmp_path / "afile"),
    }
    argv = [values.get(a, a) for a in argv]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in ("train-supernet", "search", "retrain") and "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    before = _snapshot(tmp_path)
    _one_error_line(capsys, main(argv), fragment)
    assert _snapshot(tmp_path, skip=[tmp_path / "run"]) == before


def test_help_lists_the_subcommands_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "rank" in capsys.readouterr().out


def test_an_impossible_latency_budget_is_refused_up_front(trained_supernet, tmp_path, capsys):
    code = main(
        [
            "search",
            "--supernet",
            str(trained_supernet),
            "--out",
            str(tmp_path / "s"),
            "--max-latency-ms",
            "0.0001",
            "--device",
            "cpu",
        ]
    )
    _one_error_line(capsys, code, "the fastest takes at least")


def test_a_pickled_checkpoint_is_refused_without_unsafe_advice(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth.tar"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    code = main(
        [
            "export",
            "--official-checkpoint",
            str(path),
            "--arch",
            "neas-s",
            "--format",
            "safetensors",
            "--out",
            str(tmp_path / "x.safetensors"),
        ]
    )
    err = _one_error_line(capsys, code, "refused")
    assert "weights_only=False" not in err
    assert "\x1b[" not in err
    assert "nothing was executed" in err


def test_a_file_given_where_a_directory_is_expected_is_taken_or_refused_in_one_line(trained_supernet, tmp_path, capsys):
    # a supernet file instead of its run directory is accepted
    assert (
        main(
            [
                "search",
                "--supernet",
                str(trained_supernet / "supernet.safetensors"),
                "--out",
                str(tmp_path / "s"),
                "--population",
                "4",
                "--parents",
                "2",
                "--generations",
                "1",
                "--mutations",
                "0",
                "--crossovers",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    _one_error_line(
        capsys,
        main(
            [
                "train-supernet",
                "--data",
                "imagefolder",
                "--data-dir",
                str(trained_supernet / "config.yaml"),
                "--out",
                str(tmp_path / "t"),
            ]
        ),
        "is a file, not a directory",
    )


def test_ctrl_c_is_one_error_line_and_exit_code_130(monkeypatch, capsys):
    import neas.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(neas.cli, "_config", interrupted)
    assert main(["space", "tiny"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("neas: error: interrupted")
    assert err.count("\n") == 1


@pytest.mark.parametrize("signal_name, status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_sigterm_or_sighup_handled_like_ctrl_c_exits_128_plus_its_number(monkeypatch, capsys, signal_name, status):
    """``neas compare`` turns SIGTERM and SIGHUP into ``KeyboardInterrupt(NAME)``; the exit status is the
    shell's for that signal (143, 129), not Ctrl-C's 130, so a scheduler or script can tell them apart."""
    import neas.cli

    def interrupted(args):
        raise KeyboardInterrupt(signal_name)

    monkeypatch.setattr(neas.cli, "_config", interrupted)
    assert main(["space", "tiny"]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"neas: error: interrupted by {signal_name} (a run resumes") and err.count("\n") == 1


def test_an_arch_file_that_is_not_utf8_is_one_error_line(tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_bytes('{"split": 1, "paths": [["caf\xe9"]]}'.encode("latin-1"))
    _one_error_line(capsys, main(["arch", str(arch)]), "not a UTF-8 text file")


def test_rank_refuses_supernets_of_different_spaces_before_any_training(trained_supernet, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from neas.space import SearchSpace, ShrunkSpace
    from neas.supernet.io import read_supernet_info

    info = read_supernet_info(trained_supernet)
    other = SearchSpace.from_dict({**info.space.to_dict(), "name": "other", "head_channels": 32})
    fake = tmp_path / "other"
    fake.mkdir()
    meta = {
        **info.metadata(),
        "space": json.dumps(other.to_dict()),
        "shrunk": json.dumps(ShrunkSpace.full(other).to_json()),
    }
    save_file({"x": torch.zeros(1)}, str(fake / "supernet.safetensors"), meta)
    code = main(
        ["rank", "--supernet", str(trained_supernet), str(fake), "--num-archs", "3", "--out", str(tmp_path / "rank")]
    )
    _one_error_line(capsys, code, "a space other than")
    assert not (tmp_path / "rank" / "scratch").exists()  # refused before any from-scratch training
