"""neas: one-shot neural ensemble architecture search with diversity-guided shrinking.

Public API::

    from neas import SearchSpace, EnsembleArch, Supernet, build_ensemble, count_cost

Names load on first use, so ``import neas.ensemble`` (a deployed model) does not pull in the
supernet or the search machinery.

``import neas`` registers timm models (``neas_s``, ``neas_m``, ``neas_l``, ``neas_ensemble``:
:mod:`neas.ensemble.timm_registry`) as soon as timm is imported, before or after neas, without
importing timm itself (``neas --help`` stays light)::

    import neas, timm
    model = timm.create_model("local-dir:my_ensemble", pretrained=True)  # a `neas export --format timm` folder
"""

from neas.lazy import after_import, lazy_exports

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
after_import("timm", "neas.ensemble.timm_registry")
