"""The settings of an ensemble's multi-scale features, below the command line: what a detector's
neck sees after the split (:data:`FEATURE_MODES`). Standard library only: the CLI imports this
without torch (``neas detect``'s schema checks ``feature_mode`` with it)."""

from __future__ import annotations

from neas.errors import NeasError

__all__ = ["FEATURE_MODES", "parse_feature_mode"]

FEATURE_MODES = ("mean", "concat", "path:J")  # the paths' maps averaged, stacked, or one path's


def parse_feature_mode(mode: str, num_paths: int | None = None) -> int | None:
    """Path J of ``"path:J"``, None for ``mean`` and ``concat``; with ``num_paths``, J must be a path of
    the ensemble. NeasError naming ``feature_mode`` otherwise."""
    if mode in ("mean", "concat"):
        return None
    prefix, _, index = str(mode).partition(":")
    if prefix != "path" or not index.isdigit():
        raise NeasError(f"feature_mode: unknown {mode!r}; choose mean, concat or path:J (J a path index, e.g. path:0)")
    if num_paths is not None and int(index) >= num_paths:
        raise NeasError(
            f"feature_mode: {mode} names a path the {num_paths}-path ensemble lacks (paths 0..{num_paths - 1})"
        )
    return int(index)
