"""The visual report of a run (``build_report``: figures and an HTML page), and the Markdown tables of
the commands that compare runs (``neas.report.tables``, ``neas.report.compare``: torch-free, so the
CIFAR-10 study's table script imports them without torch or matplotlib).
"""

from neas.lazy import lazy_exports

_EXPORTS = {"build_report": "neas.report.html"}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
