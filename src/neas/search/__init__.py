"""Candidate evaluation and the K-path evolution search."""

from neas.search.bn import batch_norms, recalibrate_bn

__all__ = ["batch_norms", "recalibrate_bn"]
