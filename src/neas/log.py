"""Metrics: one JSON object per line in ``metrics.jsonl``, TensorBoard events beside it.

Only rank 0 writes; on other ranks the logger is a no-op.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from neas import dist
from neas.io import append_line, read_jsonl
from neas.runfiles import METRICS, TENSORBOARD

__all__ = ["MetricLogger"]


class MetricLogger:
    """Appends metrics to ``<run>/metrics.jsonl`` and TensorBoard (``<run>/tb``)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.enabled = dist.is_main_process()
        self.path = Path(run_dir) / METRICS
        self._tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / TENSORBOARD))
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def log(self, step: int, **metrics) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        append_line(self.path, json.dumps(record))
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        path = Path(path)
        if path.is_dir():
            path = path / METRICS
        return read_jsonl(path)  # a line cut by a kill is skipped
