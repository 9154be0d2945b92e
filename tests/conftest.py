import random

import pytest
import torch

from neas.space import SearchSpace

PRESETS = ["tiny", "cifar", "imagenet"]


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny():
    return SearchSpace.preset("tiny")


@pytest.fixture(scope="session")
def imagenet():
    return SearchSpace.preset("imagenet")
