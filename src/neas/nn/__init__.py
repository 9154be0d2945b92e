"""Building blocks (thin wrappers over timm), the per-path head, BN recalibration, gradient scaling."""

from neas.nn.blocks import make_block, make_classifier, make_conv_head, make_first_block, make_last_block, make_stem
from neas.nn.bn import batch_norms, recalibrate_bn, recalibrating
from neas.nn.grad import scale_grad
from neas.nn.heads import pool_classify

__all__ = [
    "batch_norms", "make_block", "make_classifier", "make_conv_head", "make_first_block", "make_last_block", "make_stem",
    "pool_classify", "recalibrate_bn", "recalibrating", "scale_grad",
]
