"""Fixtures shared by the tests.

The suite runs at one thread per process whatever the environment says (``OMP_NUM_THREADS``
unset, 1 or 2): a float summed in another thread order can flip a discrete outcome (a search's
pick), so a test's numbers must not depend on the machine's thread count. Subprocesses (the
torchrun tests) inherit the setting.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import random

import pytest
import torch

torch.set_num_threads(1)

from neas.space import SearchSpace

PRESETS = ["tiny", "cifar", "imagenet"]


@pytest.fixture(autouse=True, scope="session")
def _decode_cache(tmp_path_factory):
    """Decoded image folders are cached per test session, never in the user's home."""
    import os

    os.environ["NEAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("decode-cache"))


@pytest.fixture
def kill_after(monkeypatch):
    """``kill_after(target, attr, after=N, when=..., instead=...)``: :func:`tests.helpers.arm_kill`;
    returns the function that restores ``target.attr``."""
    from .helpers import arm_kill

    return lambda target, attr, **kw: arm_kill(monkeypatch, target, attr, **kw)


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


@pytest.fixture(scope="session")
def trained_supernet(tmp_path_factory):
    """A tiny supernet trained on digits with diversity shrinking (~10 s on 2 cores)."""
    from neas.config import from_dict
    from neas.recipes.train_supernet import SupernetConfig, train_supernet

    from .helpers import tiny_supernet

    out = tmp_path_factory.mktemp("trained") / "supernet"
    train_supernet(
        from_dict(
            SupernetConfig,
            tiny_supernet(
                out=str(out),
                epochs=12,
                batch_size=32,
                lr=0.1,
                augment=False,
                shrink_every=3,
                shrink_drop=4,
                shrink_samples=6,
                bn_batches=2,
                probe_images=128,
            ),
        )
    )
    return out


def random_shrunk(space, seed):
    """A random shrunk space: every layer keeps a random non-empty subset of its combinations."""
    from neas.space import ShrunkSpace

    rng = random.Random(seed)
    full = ShrunkSpace.full(space)
    drops = {}
    for index in range(1, space.num_layers + 1):
        combos = list(full.layer_combinations(index))
        rng.shuffle(combos)
        drops[index] = combos[: rng.randrange(len(combos))]  # keep at least one
    return full.without(drops)
