"""Cost model: MACs, paper FLOPs, params (and measured latency)."""

from neas.cost.table import Amount, Cost, CostTable, cost_table, count_cost, parse_amount

__all__ = ["Amount", "Cost", "CostTable", "cost_table", "count_cost", "parse_amount"]
