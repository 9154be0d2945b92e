"""A path's head: last block, global pool, conv head + Swish, dropout, classifier.

Like timm's ``forward_head``, it returns the logits and the pooled penultimate features. The
networks register the three weighted parts where the released checkpoints keep them (the last
block at the end of the path's blocks, ``conv_heads.<k>``, ``classifiers.<k>``) and hold their
:class:`PathHead` as a view over those modules, outside their own module tree: a head adds no
state_dict keys, and its dropout follows the classifier's train/eval mode (the network's).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GlobalAvgPool", "PathHead"]


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C, 1, 1): the mean over the positions (a module, so the cost table sees it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class PathHead(nn.Module):
    """One path's head over its three weighted parts.

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
        x = self.global_pool(self.last_block(x))  # (B, head_channels, 1, 1)
        features = F.silu(self.conv_head(x)).flatten(1)  # (B, feature_channels)
        # the classifier's mode, not this module's: a network holds its heads outside its module tree
        logits = self.classifier(F.dropout(features, self.dropout, self.classifier.training))
        return logits, features
