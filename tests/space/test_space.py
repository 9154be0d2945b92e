import math

import pytest
import yaml

from neas.errors import NeasError
from neas.space import SearchSpace

from ..conftest import PRESETS


def test_imagenet_matches_design(imagenet):
    assert imagenet.num_layers == 20
    assert imagenet.split == (9, 20)
    assert imagenet.num_paths == 2
    assert [s.index for s in imagenet.layers if s.first_of_stage] == [1, 5, 9, 13, 17]
    assert [s.stride for s in imagenet.layers if s.first_of_stage] == [2, 2, 2, 1, 2]
    assert [s.out_channels for s in imagenet.layers if s.first_of_stage] == [24, 40, 80, 112, 160]
    assert all("skip" not in map(str, s.ops) for s in imagenet.layers if s.first_of_stage)
    assert len(imagenet.combinations(1)) == math.comb(6, 2)
    assert len(imagenet.combinations(2)) == math.comb(7, 2)


def test_cifar_ends_at_4x4():
    space = SearchSpace.preset("cifar")
    total = space.stem_stride * math.prod(s.stride for s in space.layers)
    assert space.input_size // total == 4
    assert space.width_mult < 1
    assert space.layers[-1].out_channels == 80


def test_size_counts_ordered_ensembles(tiny):
    # brute-force count over the tiny space
    total = 0
    for s in tiny.split_points:
        n = 1
        for spec in tiny.layers:
            n *= len(spec.ops) if spec.index <= s else len(spec.ops) * (len(spec.ops) - 1)
        total += n
    assert tiny.size() == total


@pytest.mark.parametrize("name", PRESETS)
def test_yaml_round_trip(name, tmp_path):
    space = SearchSpace.preset(name)
    path = tmp_path / "space.yaml"
    path.write_text(space.to_yaml())
    assert SearchSpace.from_yaml(path) == space
    assert SearchSpace.resolve(str(path)) == space


def test_custom_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "input_size": 64,
                "stages": [{"channels": 16, "layers": 3, "stride": 2}, {"channels": 32, "layers": 2, "stride": 2}],
                "ops": ["k3e3", "k5e3", "k7e3", "skip"],
                "split": [0, 5],
                "num_paths": 3,
            }
        )
    )
    space = SearchSpace.resolve(str(path))
    assert space.name == "mine"
    assert space.num_layers == 5
    assert space.num_paths == 3
    assert len(space.combinations(1)) == 1
    assert len(space.combinations(2)) == 4


@pytest.mark.parametrize(
    "change,message",
    [
        ({"stages": []}, "'stages' is empty"),
        ({"ops": ["k3e4", "k3e4"]}, "lists an op twice"),
        ({"ops": ["k3e4", "skip"]}, "needs 2 distinct non-skip ops"),
        ({"split": [3, 30]}, "split range"),
        ({"num_paths": 0}, "num_paths must be at least 1"),
        ({"ops": ["k3e4", "k9x"]}, "unknown op 'k9x'"),
        ({"stages": [{"channels": 8, "layers": 2, "stride": 3}]}, r"stages\[0\].stride"),
        ({"split": [1]}, "expected 2 values"),
        ({"input_size": "big"}, "space.input_size: expected an integer"),
        ({"numpaths": 2}, "unknown key 'space.numpaths' \\(did you mean 'num_paths'\\?\\)"),
    ],
)
def test_bad_spaces(change, message):
    data = {**SearchSpace.preset("tiny").to_dict(), **change}
    with pytest.raises(NeasError, match=message):
        SearchSpace.from_dict(data)


def test_unknown_preset_suggests():
    with pytest.raises(NeasError, match="did you mean 'imagenet'"):
        SearchSpace.preset("imagenett")


def test_malformed_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("stages: [\n  - {channels: 8\n")
    with pytest.raises(NeasError, match="broken.yaml.*malformed YAML"):
        SearchSpace.from_yaml(path)
    with pytest.raises(NeasError, match="no such file"):
        SearchSpace.from_yaml(tmp_path / "nope.yaml")
