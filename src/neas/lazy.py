"""Package namespaces whose names load on first use (PEP 562 module ``__getattr__``).

``neas``, ``neas.cost``, ``neas.ensemble`` and ``neas.shrink`` export names from modules that
import torch; loading them only when used lets the CLI import a package's torch-free ``settings``
module (``neas --help`` and option errors stay light).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose names in ``exports`` (name ->
    module) are imported from their module when first read::

        __getattr__, __dir__, __all__ = lazy_exports(__name__, {"Cost": "neas.cost.table"})
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        # kept in the namespace, where a later read finds it directly and tools that read a module's
        # __dict__ (pdoc, for the API reference) see it
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__, sorted(exports)
