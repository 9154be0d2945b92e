"""Diversity-guided search-space shrinking (paper §3.2, Algorithm 1).

The names below load on first use, so the CLI can import :mod:`neas.shrink.settings` (its
schema's settings) without the torch modules.
"""

from neas.lazy import lazy_exports

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
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
