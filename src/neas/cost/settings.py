"""The settings of the cost model, below the command line: the runtimes latency is measured in
(:data:`RUNTIMES`, :mod:`neas.cost.runtime`). Standard library only: the CLI imports this without torch."""

__all__ = ["RUNTIMES"]

RUNTIMES = ("torch", "onnxruntime")
