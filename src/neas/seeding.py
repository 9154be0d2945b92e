"""Every random stream of a run, derived from the run's seed (docs/DECISIONS.md, "One seeding scheme").

A stream is named by the run seed, a purpose and integer keys — ``("shuffle", epoch)``,
``("epoch", epoch, rank)``, ``("augment", epoch)`` — and its seed is a 64-bit BLAKE2b digest of
that name (like :class:`numpy.random.SeedSequence`'s spawn keys, but ten times faster, and a
name is hashed as a whole, so names of different lengths never coincide), never a sum of
multiples of the keys: ``seed * 1000 + epoch * 16 + rank`` made rank 16
replay rank 0's next epoch and seed 0 at epoch 125 replay seed 2 at epoch 0. Streams are a
function of their names only, so a resumed run repeats an uninterrupted one, and per-image draws
are keyed by the image's index, so they do not depend on batch size, loader workers or ranks.
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np
import torch

__all__ = ["per_image_rng", "seed_everything", "seeded_globals", "stream_seed"]


def stream_seed(seed: int, purpose: str, *keys: int | str) -> int:
    """A 63-bit seed for the stream ``purpose`` at ``keys`` of a run seeded ``seed``."""
    name = repr((int(seed), str(purpose), *(k if isinstance(k, str) else int(k) for k in keys)))  # one text per name
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's (timm's RandAugment draws from both) and torch's global RNGs."""
    random.seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])  # all 63 bits: NumPy's legacy seed takes 32-bit words
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_globals(seed: int):
    """Runs the body with the global RNGs (Python, NumPy, torch CPU) seeded ``seed``, then puts
    their states back: a per-image draw inside it neither depends on nor disturbs the caller's streams."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)


def per_image_rng(seed: int, purpose: str, epoch: int) -> np.random.Generator:
    """The generator an epoch's per-image table is drawn from: row ``i`` of a table of
    ``len(dataset)`` rows belongs to image ``i``, whatever batch, rank or worker it lands in."""
    return np.random.default_rng(stream_seed(seed, purpose, epoch))
