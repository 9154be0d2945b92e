"""Search spaces, ops and ensemble architectures (plain Python, no ``torch.nn``)."""

from neas.space.arch import EnsembleArch, resolve_arch_and_space
from neas.space.ops import SKIP, Op, parse_op
from neas.space.shrunk import ShrunkSpace
from neas.space.space import LayerSpec, SearchSpace, Stage, make_divisible

__all__ = ["EnsembleArch", "LayerSpec", "Op", "SKIP", "SearchSpace", "ShrunkSpace", "Stage", "make_divisible", "parse_op", "resolve_arch_and_space"]
