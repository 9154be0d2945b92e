"""The per-path head: last block, pool, conv head, classifier; logits and pooled features."""

import torch
import torch.nn.functional as F

from neas.nn import make_head


def test_the_head_returns_logits_and_the_pooled_features_they_come_from(tiny):
    head = make_head(tiny, 7).eval()
    x = torch.randn(3, tiny.last_channels, 4, 4)  # (B, C, H, W): the path's last layer output
    logits, features = head(x)
    assert logits.shape == (3, 7)
    assert features.shape == (3, tiny.channels(tiny.feature_channels))
    pooled = head.last_block(x).mean((2, 3), keepdim=True)
    torch.testing.assert_close(features, F.silu(head.conv_head(pooled)).flatten(1), rtol=0, atol=0)
    torch.testing.assert_close(logits, head.classifier(features), rtol=0, atol=0)


def test_the_head_drops_features_only_while_training(tiny):
    head = make_head(tiny, 7)
    x = torch.randn(3, tiny.last_channels, 4, 4)
    assert not torch.equal(head(x)[0], head(x)[0])  # training: another dropout mask each call
    head.eval()
    assert torch.equal(head(x)[0], head(x)[0])
