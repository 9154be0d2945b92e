"""Cost model: MACs, paper FLOPs, params (and measured latency)."""

from neas.cost.table import Cost, CostTable, cost_table, count_cost, parse_amount

__all__ = ["Cost", "CostTable", "cost_table", "count_cost", "parse_amount"]
