"""Diversity-guided search-space shrinking (paper §3.2, Algorithm 1)."""

from neas.shrink.score import accuracy_scores, diversity_scores
from neas.shrink.shrinker import SHRINK_MODES, ShrinkSettings, probe_arch, select_drops, shrink_round
from neas.shrink.statistics import LayerStats, ProbeSample, layer_statistics

__all__ = [
    "LayerStats",
    "ProbeSample",
    "SHRINK_MODES",
    "ShrinkSettings",
    "accuracy_scores",
    "diversity_scores",
    "layer_statistics",
    "probe_arch",
    "select_drops",
    "shrink_round",
]
