"""neas: one-shot neural ensemble architecture search with diversity-guided shrinking.

Public API::

    from neas import SearchSpace, EnsembleArch, Supernet, build_ensemble, count_cost

Names load on first use, so ``import neas.ensemble`` (a deployed model) does not pull in the
supernet or the search machinery.
"""

from neas.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Cost": "neas.cost",
    "EnsembleArch": "neas.space",
    "EnsembleNet": "neas.ensemble",
    "NeasError": "neas.errors",
    "Op": "neas.space",
    "SearchSpace": "neas.space",
    "ShrunkSpace": "neas.space",
    "Supernet": "neas.supernet",
    "build_ensemble": "neas.ensemble",
    "count_cost": "neas.cost",
    "load_ensemble": "neas.ensemble.io",
    "load_official": "neas.ensemble.official",
    "save_ensemble": "neas.ensemble.io",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
