"""The plain ensemble network."""

from neas.ensemble.model import EnsembleNet, build_ensemble

__all__ = ["EnsembleNet", "build_ensemble"]
