"""Cost model: MACs, paper FLOPs, params (and measured latency).

The names below load on first use, so the CLI can import :mod:`neas.cost.settings` without torch.
"""

import importlib

_EXPORTS = {
    "Amount": "neas.settings",
    "Cost": "neas.cost.table",
    "CostTable": "neas.cost.table",
    "cost_table": "neas.cost.table",
    "count_cost": "neas.cost.table",
    "parse_amount": "neas.settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
