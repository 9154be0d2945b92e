"""Package namespaces whose names load on first use (PEP 562 module ``__getattr__``), and a module
imported right after another one is (:func:`after_import`).

``neas``, ``neas.cost``, ``neas.ensemble`` and ``neas.shrink`` export names from modules that
import torch; loading them only when used lets the CLI import a package's torch-free ``settings``
module (``neas --help`` and option errors stay light). Likewise ``import neas`` registers its timm
models only once timm is imported (by the user or by neas), never importing timm itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import sys
from collections.abc import Callable

__all__ = ["after_import", "lazy_exports"]


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


def _import_quietly(target: str) -> None:
    """Imports ``target``; a failure is a warning, never an error of the import that triggered it."""
    try:
        importlib.import_module(target)
    except Exception as exc:  # a broken plugin must not break ``import timm``
        logging.getLogger(__name__).warning("could not import %s after its trigger: %s", target, exc)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds the top-level module ``name`` as the other finders do, and makes its loader import ``target``
    once the module has run (a post-import hook); it removes itself on first use."""

    def __init__(self, name: str, target: str):
        self.name, self.target = name, target

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one use; and the search below must not find this finder again
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            if vars(loader).get("exec_module") is exec_module:
                del loader.exec_module  # once: a loader shared with other modules (a zip's) is left as it was
            run(module)
            _import_quietly(self.target)

        try:
            loader.exec_module = exec_module  # on this loader instance only
        except AttributeError:  # a loader without instance attributes: no hook, the import goes on
            logging.getLogger(__name__).warning(
                "cannot import %s after %s: its loader takes no hook", self.target, fullname
            )
        return spec


def after_import(name: str, target: str) -> None:
    """Imports the module ``target`` as soon as the top-level module ``name`` has been imported: now, when
    it already is, else right after the first ``import name`` (a finder at the front of ``sys.meta_path``),
    without importing ``name`` itself. Errors from ``target`` are logged as warnings."""
    if name in sys.modules:
        _import_quietly(target)
    elif not any(isinstance(f, _AfterImport) and (f.name, f.target) == (name, target) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, target))
