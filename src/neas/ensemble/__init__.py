"""The plain ensemble network.

The names below load on first use, so the CLI can import :mod:`neas.ensemble.settings` without torch.
"""

import importlib

_EXPORTS = {
    "EnsembleNet": "neas.ensemble.model",
    "build_ensemble": "neas.ensemble.model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
