"""The typed records of a run's files: every field a reader relies on is checked where it is read."""

from __future__ import annotations

import json

import pytest

from neas import records, runfiles
from neas.errors import NeasError
from neas.records import ArchRecord, CascadeRecord, EvalRecord, Summary


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"split": 1, "paths"', "not a readable arch file"),
        ("[1, 2]", "arch file must be a JSON object, got list"),
        ('{"split": 1}', "arch file lacks 'paths'"),
        ('{"split": -1, "paths": [["a"]]}', "'split' must be an integer >= 0"),
        ('{"split": 1, "paths": ["a"]}', "'paths' must be a non-empty list of lists"),
        ('{"split": 1, "paths": [["a"]], "macs": -5}', "'macs' must be a finite number >= 0"),
        ('{"split": 1, "paths": [["a"]], "supernet_acc": 1.5}', "'supernet_acc' must be a finite number in [0, 1]"),
    ],
)
def test_a_damaged_arch_file_is_named_with_what_is_wrong(tmp_path, text, message):
    path = tmp_path / runfiles.ARCH
    path.write_text(text)
    with pytest.raises(NeasError) as caught:
        records.read_arch(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_an_arch_file_reads_as_its_ensemble_costs_and_one_shot_score(tmp_path):
    path = tmp_path / runfiles.ARCH
    raw = {"split": 2, "paths": [["k3e3"], ["k5e6"]], "macs": 10, "paper_flops": 20, "params": 3, "supernet_acc": 0.5}
    path.write_text(json.dumps({**raw, "evaluations": 7}))
    arch = records.read_arch(path)
    assert arch.arch == {"split": 2, "paths": [["k3e3"], ["k5e6"]]}
    assert arch.costs == {"macs": 10, "paper_flops": 20, "params": 3}
    assert arch.supernet_acc == 0.5 and arch.get("evaluations") == 7


@pytest.mark.parametrize(
    "record,message",
    [
        ({"ensemble": {"nll": 0.3}}, "'ensemble' must be an object holding a number 'top1'"),
        ({"ensemble": {"top1": 0.5}, "path0": {"top1": "high"}}, "path0: field 'top1' must be a finite number"),
        ({"ensemble": {"top1": 0.5}, "path0": 3}, "'path0' must be an object"),
        ({"ensemble": {"top1": float("nan")}}, "must be a finite number in [0, 1]"),
        ({"ensemble": {"top1": 0.5}, "params": True}, "'params' must be a finite number >= 0"),
    ],
)
def test_an_evaluation_with_a_wrong_field_is_refused(tmp_path, record, message):
    path = tmp_path / runfiles.EVAL
    path.write_text(json.dumps(record))
    with pytest.raises(NeasError) as caught:
        records.read_eval(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_an_evaluation_reads_its_paths_in_order_and_keeps_every_field():
    raw = {"ensemble": {"top1": 0.7}, "path1": {"top1": 0.4}, "path0": {"top1": 0.6}, "macs": 5, "images": 9}
    ev = EvalRecord.from_json(raw, "eval.json")
    assert ev.top1 == 0.7 and ev.path_top1 == [0.6, 0.4]
    assert ev.costs == {"macs": 5, "paper_flops": None, "params": None}
    assert ev.get("images") == 9 and ev.to_json() is raw
    assert records.predictor_names(2) == ["ensemble", "path0", "path1"]


def test_generations_are_read_in_order_and_checked(tmp_path):
    for g in range(3):
        (tmp_path / runfiles.generation_file(g)).write_text(f'{{"generation": {g}, "members": []}}')
    assert [r["generation"] for r in records.read_generations(tmp_path)] == [0, 1, 2]
    assert len(records.read_generations(tmp_path, 2)) == 2
    (tmp_path / runfiles.generation_file(1)).write_text('{"members": 3}')
    with pytest.raises(NeasError, match="field 'members' must be a list"):
        records.read_generations(tmp_path)


def test_a_summary_round_trips_and_keeps_the_key_order_it_was_written_with(tmp_path):
    arch = ArchRecord.from_json(
        {"split": 1, "paths": [["a"], ["b"]], "macs": 4, "paper_flops": 8, "params": 2, "supernet_acc": 0.3}, "arch"
    )
    ev = EvalRecord.from_json(
        {"ensemble": {"top1": 0.6, "nll": 1.1}, "path0": {"top1": 0.5}, "path1": {"top1": 0.4}}, "e"
    )
    summary = Summary.of(tmp_path / "report", arch, ev, None, {"macs": 5})
    written = summary.to_json()
    assert list(written) == [
        "report", "test_top1", "test_nll", "test_ece", "path_test_top1", "supernet_acc",
        "macs", "paper_flops", "params", "constraints", "arch",
    ]  # fmt: skip
    path = tmp_path / runfiles.SUMMARY
    path.write_text(json.dumps(written))
    assert records.read_summary(path) == summary


@pytest.mark.parametrize(
    "cascade,message",
    [
        ({"order": [0, 0], "thresholds": [0.5]}, "'order' must order the paths 0..1"),
        ({"order": [0, 1], "thresholds": [0.5, 0.6]}, "'thresholds' must be 1 finite numbers"),
        ({"order": [0, 1], "thresholds": [float("nan")]}, "'thresholds' must be 1 finite numbers"),
        ({"order": [0, 1], "thresholds": [0.5], "temperature": -1}, "'temperature' must be a finite number in [0.001,"),
        ({"order": [0, 1], "thresholds": [0.5], "temperature": 1e300}, "'temperature' must be a finite number in"),
        ({"order": [0, 1], "thresholds": [0.5], "temperature": 1e-300}, "'temperature' must be a finite number in"),
        ({"order": [True, 0], "thresholds": [0.5]}, "'order' must order"),
        ({"order": [0, 1], "thresholds": [0.5], "exit": "coverage"}, "'exit' must be one of accuracy, risk, got"),
        ({"order": [0, 1], "thresholds": [0.5], "exit": 1}, "'exit' must be one of accuracy, risk, got 1"),
        ([0, 1], "must be a JSON object"),
    ],
)
def test_a_tampered_cascade_is_refused(cascade, message):
    with pytest.raises(NeasError) as caught:
        CascadeRecord.from_json(cascade, 2)
    assert message in str(caught.value)


def test_a_cascade_round_trips():
    stored = {"order": [1, 0, 2], "thresholds": [0.5, 0.75], "tolerance": 0.5, "temperature": None, "fitted_on": "x"}
    for rule in ("accuracy", "risk"):
        cascade = CascadeRecord.from_json({**stored, "exit": rule}, 3)
        assert cascade.exit_rule == rule and cascade.to_json() == {**stored, "exit": rule}
        assert CascadeRecord.from_json(cascade.to_json(), 3) == cascade
    # a record written before there were two rules was fitted for top-1
    assert CascadeRecord.from_json(stored, 3).exit_rule == "accuracy"
