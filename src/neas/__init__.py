"""neas: one-shot neural ensemble architecture search with diversity-guided shrinking.

Public API::

    from neas import SearchSpace, EnsembleArch, Supernet, build_ensemble, count_cost
"""

from neas.cost import Cost, count_cost
from neas.ensemble import EnsembleNet, build_ensemble
from neas.ensemble.io import load_ensemble, save_ensemble
from neas.ensemble.official import load_official
from neas.errors import NeasError
from neas.space import EnsembleArch, Op, SearchSpace, ShrunkSpace
from neas.supernet import Supernet

__version__ = "0.1.0"

__all__ = [
    "Cost",
    "EnsembleArch",
    "EnsembleNet",
    "NeasError",
    "Op",
    "SearchSpace",
    "ShrunkSpace",
    "Supernet",
    "build_ensemble",
    "count_cost",
    "load_ensemble",
    "load_official",
    "save_ensemble",
]
