"""Helpers shared by the tests (fixtures that wrap them live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable


class Killed(BaseException):
    """Stands in for kill -9 or Ctrl-C inside a run: not an Exception, so nothing catches it."""


def arm_kill(
    monkeypatch,
    target,
    attr: str,
    after: int = 1,
    when: Callable[..., bool] | None = None,
    instead: Callable[..., None] | None = None,
) -> Callable[[], None]:
    """Makes ``target.attr`` raise :class:`Killed` on its ``after``-th call (counting only calls
    for which ``when(*args, **kwargs)`` is true, if given). The call itself completes first, unless
    ``instead`` is given: then ``instead(*args, **kwargs)`` runs in its place (a half-written
    file, say). Returns a function that restores the original."""
    real = getattr(target, attr)
    calls = []

    def dying(*args, **kwargs):
        if when is None or when(*args, **kwargs):
            calls.append(1)
            if len(calls) == after:
                if instead is not None:
                    instead(*args, **kwargs)
                else:
                    real(*args, **kwargs)
                raise Killed()
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, dying)
    return lambda: monkeypatch.setattr(target, attr, real)


def checkpoint_of(kind: str) -> Callable[..., bool]:
    """``when`` for ``neas.train.recipe.save_checkpoint``: a checkpoint of a ``kind`` run
    ("train-supernet", "retrain", "detect"), so a pipeline's other stages are not counted."""
    return lambda run, *args, **kwargs: run.kind == kind


# A YAML alias bomb: 9 levels of 9 references, ~387M values once built (a few hundred bytes on disk)
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


# The one tiny supernet training the tests start from (torchtune's per-test config overrides): the
# K = 2 tiny space on the bundled digits, a shrinking round every epoch, a few probe images.
TINY_SUPERNET = {
    "space": "tiny",
    "data": "digits",
    "epochs": 4,
    "batch_size": 64,
    "lr": 0.2,
    "shrink_every": 1,
    "shrink_drop": 3,
    "shrink_samples": 4,
    "bn_batches": 1,
    "probe_images": 64,
    "device": "cpu",
}
_PIPELINE_WIDE = ("space", "data", "device")  # `neas run` sets these once, for every stage


def tiny_supernet(**overrides) -> dict:
    """The tiny supernet config with ``overrides`` (a None value drops the key: its default applies)."""
    return {k: v for k, v in {**TINY_SUPERNET, **overrides}.items() if v is not None}


def tiny_supernet_argv(**overrides) -> list[str]:
    """:func:`tiny_supernet` as ``neas train-supernet`` flags."""
    argv = []
    for key, value in tiny_supernet(**overrides).items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def tiny_supernet_section(**overrides) -> dict:
    """:func:`tiny_supernet` as the ``supernet:`` section of a ``neas run`` config (space, data and
    device are the run's)."""
    return {k: v for k, v in tiny_supernet(**overrides).items() if k not in _PIPELINE_WIDE}
