"""The plain ensemble network.

The names below load on first use, so the CLI can import :mod:`neas.ensemble.settings` without torch.
"""

from neas.lazy import lazy_exports

_EXPORTS = {
    "EnsembleNet": "neas.ensemble.model",
    "build_ensemble": "neas.ensemble.model",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
