"""Building blocks (thin wrappers over timm) and the per-path head."""

from neas.nn.blocks import make_block, make_classifier, make_conv_head, make_first_block, make_head_conv, make_stem
from neas.nn.heads import pool_classify

__all__ = ["pool_classify", "make_block", "make_classifier", "make_conv_head", "make_first_block", "make_head_conv", "make_stem"]
