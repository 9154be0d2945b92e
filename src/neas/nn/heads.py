"""The end of a path's head: global pool, 1x1 conv + Swish, dropout, linear.

(Before it, each path ends with a 1x1 conv + BN + Swish, :func:`make_last_block`, which the
released checkpoints store as the last block of each path.)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["pool_classify"]


def pool_classify(
    x: torch.Tensor, conv_head: nn.Conv2d, classifier: nn.Linear, dropout: float, training: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pools and classifies one path's head-conv output.

    Args:
        x: (B, head_channels, H, W), the output of the path's head conv.

    Returns:
        logits (B, num_classes) and the pooled penultimate features (B, feature_channels).
    """
    x = x.mean((2, 3), keepdim=True)  # (B, head_channels, 1, 1)
    features = F.silu(conv_head(x)).flatten(1)  # (B, feature_channels)
    logits = classifier(F.dropout(features, dropout, training))
    return logits, features
