"""A path's head: last block, global pool, conv head + Swish, dropout, classifier.

Like timm's ``forward_head``, it returns the logits and the pooled penultimate features. The
networks register the three weighted parts where the released checkpoints keep them (the last
block at the end of the path's blocks, ``conv_heads.<k>``, ``classifiers.<k>``): a network's
forward runs them with :func:`run_head`, and a :class:`PathHead` over them is built on demand
(``piece_module``), so a head adds no state_dict keys and nothing holds a module outside the
network's tree. Its dropout follows the classifier's train/eval mode (the network's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GlobalAvgPool", "PathHead", "global_avg_pool", "run_head"]


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1): the mean over the positions."""
    return x.mean((2, 3), keepdim=True)


class GlobalAvgPool(nn.Module):
    """:func:`global_avg_pool` as a module, so the cost table sees it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(x)


def run_head(
    x: torch.Tensor,
    last_block: nn.Module,
    conv_head: nn.Module,
    classifier: nn.Module,
    dropout: float,
    pool: Callable[[torch.Tensor], torch.Tensor] = global_avg_pool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A head's forward over its parts: (B, C, H, W), the path's last layer output -> logits
    (B, num_classes) and pooled penultimate features (B, feature_channels)."""
    x = pool(last_block(x))  # (B, head_channels, 1, 1)
    features = F.silu(conv_head(x)).flatten(1)  # (B, feature_channels)
    # the classifier's mode, not the head's: a head built on demand is a new module, in train mode
    logits = classifier(F.dropout(features, dropout, classifier.training))
    return logits, features


class PathHead(nn.Module):
    """One path's head over its three weighted parts (:func:`run_head`).

    Args:
        last_block: 1x1 conv + BN + Swish to ``head_channels`` (the released '960 conv').
        conv_head: 1x1 conv with bias after pooling (Swish follows, no BN).
        classifier: the linear classifier.
        dropout: dropout probability before the classifier while training.
    """

    def __init__(self, last_block: nn.Module, conv_head: nn.Conv2d, classifier: nn.Linear, dropout: float):
        super().__init__()
        self.last_block, self.global_pool = last_block, GlobalAvgPool()
        self.conv_head, self.classifier = conv_head, classifier
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W), the path's last layer output -> logits (B, num_classes) and pooled
        penultimate features (B, feature_channels)."""
        return run_head(x, self.last_block, self.conv_head, self.classifier, self.dropout, self.global_pool)
