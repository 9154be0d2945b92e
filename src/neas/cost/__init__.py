"""Cost model: MACs, paper FLOPs, params (and measured latency).

The names below load on first use, so the CLI can import :mod:`neas.cost.settings` without torch.
"""

from neas.lazy import lazy_exports

_EXPORTS = {
    "Amount": "neas.settings",
    "Cost": "neas.cost.table",
    "CostTable": "neas.cost.table",
    "cost_table": "neas.cost.table",
    "count_cost": "neas.cost.table",
    "parse_amount": "neas.settings",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
