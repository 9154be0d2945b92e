"""Diversity-guided search-space shrinking (paper §3.2, Algorithm 1).

The names below load on first use, so the CLI can import :mod:`neas.shrink.settings` (its
schema's settings) without the torch modules.
"""

import importlib

_EXPORTS = {
    "LayerStats": "neas.shrink.statistics",
    "ProbeSample": "neas.shrink.statistics",
    "SHRINK_MODES": "neas.shrink.settings",
    "ShrinkSettings": "neas.shrink.settings",
    "accuracy_scores": "neas.shrink.score",
    "diversity_scores": "neas.shrink.score",
    "layer_statistics": "neas.shrink.statistics",
    "probe_arch": "neas.shrink.shrinker",
    "select_drops": "neas.shrink.shrinker",
    "shrink_round": "neas.shrink.shrinker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
