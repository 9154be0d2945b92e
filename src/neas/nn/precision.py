"""The one precision rule of losses and scores: at least float32.

Under mixed precision a network returns float16/bfloat16 logits, which losses, accuracies and
distances upcast to float32. A network built in float64 (``torch.set_default_dtype``, how the
pinned-number tests run every recipe so that CPUs of any vendor agree: docs/DECISIONS.md) keeps
float64: a plain ``.float()`` would round its logits back to float32 and bring back the
last-bit differences between CPUs.
"""

from __future__ import annotations

import torch

__all__ = ["full_precision"]


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in its own dtype when that is wider (float64).

    >>> full_precision(torch.ones(2, dtype=torch.float16)).dtype
    torch.float32
    >>> full_precision(torch.ones(2, dtype=torch.float64)).dtype
    torch.float64
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))
