"""The settings of search-space shrinking (paper §3.2, Algorithm 1), below the command line.

``neas train-supernet`` nests :class:`ShrinkSettings` in its schema, spelled flat outside Python
(``shrink``, ``shrink_every``, ...). Standard library only: the CLI imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from neas.settings import setting, validate_fields

__all__ = ["SHRINK_MODES", "ShrinkSettings"]

SHRINK_MODES = ("diversity", "quality", "accuracy", "none")


@dataclass(frozen=True)
class ShrinkSettings:
    """How a supernet's space is shrunk (Algorithm 1). Outside Python each key is spelled
    ``shrink_<name>`` (the mode: ``shrink``), as in ``neas train-supernet --shrink-every 20``."""

    mode: str = setting(
        "diversity",
        "what the shrinking scores: diversity (the paper's), quality (S = I: quality alone), accuracy, none",
        valid=SHRINK_MODES,
    )
    every: int = setting(20, "E: epochs between shrinking rounds", valid=">= 1")
    drop: int = setting(20, "k: combinations dropped per round", valid=">= 0")
    until: int = setting(0, "T: stop shrinking once at most this many combinations remain", valid=">= 0")
    samples: int = setting(20, "Z: ensembles sampled per round", valid=">= 1")
    beta: float = setting(
        1e-3, "beta of the similarity exp(-beta * distance) (paper: 1e-3 for 1280-d features)", valid=">= 0"
    )
    gamma: float = setting(
        5.0, "gamma of the quality exp(gamma * accuracy)", valid="[0, 50]"
    )  # exp(2 K gamma) stays finite

    def __post_init__(self):
        validate_fields(self)  # flags and YAML are checked under their flat names (shrink_every) before this
