"""Search spaces as data: :class:`SearchSpace`, loaded from a preset name or a YAML file.

A space is a stem, a fixed depthwise-separable block L0, then stages of searchable layers
L1..Ln (each layer chooses one candidate op; the first layer of a stage applies the stride
and changes width, so it cannot be skip), then one head per path. The split point ``s``
makes L0..Ls shared by all K paths (docs/DESIGN.md §2). This module knows nothing of torch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from neas.errors import NeasError, suggest
from neas.fields import from_dict, load_yaml, to_dict
from neas.space.ops import Op, parse_op
from neas.space.presets import SPACE_PRESETS

__all__ = ["LayerSpec", "SearchSpace", "Stage", "make_divisible"]

# Sizes past these are refused when a space is read: a crafted file (a supernet's metadata, a YAML)
# must not make the builder allocate hundreds of GB before any shape is checked (issue 30, item 16).
MAX_CHANNELS = 100_000
MAX_INPUT_SIZE = 4096
MAX_WIDTH_MULT = 16.0
MAX_LAYERS = 1000


def make_divisible(value: float, divisor: int = 8) -> int:
    """Channel rounding of timm / MobileNet: nearest multiple of ``divisor``, never < 90 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class Stage:
    """A run of searchable layers with the same output width."""

    channels: int  # output channels before the width multiplier
    layers: int  # number of searchable layers
    stride: int  # stride of the stage's first layer (1 or 2)


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer, resolved: index (1-based, L1..Ln), widths and stride."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    first_of_stage: bool
    ops: tuple[Op, ...]  # candidate ops here (no skip on a first-of-stage layer)

    @property
    def name(self) -> str:
        return f"L{self.index}"


@dataclass(frozen=True)
class SearchSpace:
    """An ensemble search space (docs/DESIGN.md §2): a fixed stem and first block, searchable
    stages of layers that each pick one of ``ops``, K paths that share layers L1..Ls for a split
    point s in ``split``, and K heads. Channels are scaled by ``width_mult``.

    Args:
        stages: the searchable stages, in order, each ``{channels, layers, stride}``.
        ops: the candidate ops of every searchable layer (``"k5e6"``, ``"skip"``, ...).
        split: the inclusive range of split points.
        name: a label (a preset's name, a YAML file's stem).
        num_paths: K, the number of ensemble members.
        input_size: the square input resolution.
        in_channels, stem_channels, stem_stride, first_block_channels: the fixed stem and first block L0.
        head_channels, feature_channels: each head's 1x1 conv + BN + Swish width, and its pooled conv's.
        width_mult: multiplies every channel count (rounded to multiples of 8).
        dropout: dropout before each path's classifier while training.

    Build one with :meth:`preset` (``imagenet``, ``cifar``, ``tiny``), :meth:`from_yaml` or
    :meth:`from_dict`; :meth:`resolve` takes whichever a ``--space`` option was given.

    Example:
        >>> from neas import SearchSpace
        >>> space = SearchSpace.preset("tiny")
        >>> space.num_layers, space.num_paths, space.input_size
        (4, 2, 32)
        >>> SearchSpace.from_dict(space.to_dict()) == space
        True
    """

    stages: tuple[Stage, ...]  # searchable stages, in order
    ops: tuple[Op, ...]  # candidate ops of every searchable layer ('skip' allowed)
    split: tuple[int, int]  # inclusive range of split points s: L0..Ls are shared
    name: str = "custom"
    num_paths: int = 2  # K, the number of ensemble members
    input_size: int = 224  # square input resolution
    in_channels: int = 3  # image channels
    stem_channels: int = 16  # 3x3 stem convolution width
    stem_stride: int = 2
    first_block_channels: int = 16  # width of the fixed depthwise-separable block L0
    head_channels: int = 960  # per-path 1x1 conv + BN + Swish after the last layer
    feature_channels: int = 1280  # per-path 1x1 conv (bias, no BN) after global pooling
    width_mult: float = 1.0  # multiplies every channel count (rounded to multiples of 8)
    dropout: float = 0.2  # dropout before each path's classifier

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(parse_op(o) for o in self.ops))
        object.__setattr__(self, "stages", tuple(from_dict(Stage, s, "stages") for s in self.stages))
        object.__setattr__(self, "split", tuple(self.split))
        if self.num_paths == 1:  # one path shares nothing: its split range is accepted and ignored
            object.__setattr__(self, "split", (0, 0))
        self._validate()

    # ---- construction -------------------------------------------------------------------
    @staticmethod
    def preset(name: str) -> SearchSpace:
        """Returns a shipped preset: ``imagenet``, ``cifar`` or ``tiny``."""

        if name not in SPACE_PRESETS:
            raise NeasError(
                f"unknown search space preset {name!r}{suggest(name, SPACE_PRESETS)}; presets: "
                f"{', '.join(SPACE_PRESETS)}"
            )
        return SearchSpace.from_dict({"name": name, **SPACE_PRESETS[name]})

    @staticmethod
    def from_dict(data: dict) -> SearchSpace:
        return from_dict(SearchSpace, data, "space")

    @staticmethod
    def from_yaml(path: str | Path) -> SearchSpace:
        data = load_yaml(path)
        data.setdefault("name", Path(path).stem)
        try:
            return SearchSpace.from_dict(data)
        except NeasError as exc:
            raise NeasError(f"{path}: {exc}") from None

    @staticmethod
    def resolve(spec: str | Path | SearchSpace) -> SearchSpace:
        """A preset name, a YAML path or a space: what every ``--space`` option accepts."""
        if isinstance(spec, SearchSpace):
            return spec
        text = str(spec)
        if text.endswith((".yaml", ".yml")) or Path(text).is_file():
            return SearchSpace.from_yaml(text)
        return SearchSpace.preset(text)

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ---- derived structure ----------------------------------------------------------------
    def channels(self, value: int) -> int:
        return value if self.width_mult == 1.0 else make_divisible(value * self.width_mult)

    @cached_property
    def layers(self) -> tuple[LayerSpec, ...]:
        """The searchable layers L1..Ln."""
        specs, in_ch = [], self.channels(self.first_block_channels)
        no_skip = tuple(o for o in self.ops if not o.is_skip)
        for stage in self.stages:
            out_ch = self.channels(stage.channels)
            for j in range(stage.layers):
                first = j == 0
                specs.append(
                    LayerSpec(
                        len(specs) + 1,
                        in_ch,
                        out_ch,
                        stage.stride if first else 1,
                        first,
                        no_skip if first else self.ops,
                    )
                )
                in_ch = out_ch
        return tuple(specs)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def split_points(self) -> range:
        return range(self.split[0], self.split[1] + 1)

    @property
    def last_channels(self) -> int:
        return self.layers[-1].out_channels if self.layers else self.channels(self.first_block_channels)

    def layer(self, index: int) -> LayerSpec:
        """Layer ``L{index}`` (1-based)."""
        if not 1 <= index <= self.num_layers:
            raise NeasError(f"layer L{index} does not exist: the space has L1..L{self.num_layers}")
        return self.layers[index - 1]

    def combinations(self, index: int) -> tuple[tuple[Op, ...], ...]:
        """All sets of K distinct ops of layer ``L{index}``, each in the space's op order."""
        return tuple(itertools.combinations(self.layer(index).ops, self.num_paths))

    def size(self) -> int:
        """The number of distinct ensembles (ordered paths) in the space."""
        total = 0
        for s in self.split_points:
            n = 1
            for spec in self.layers:
                ops = len(spec.ops)
                n *= ops if spec.index <= s else math.perm(ops, self.num_paths)
            total += n
        return total

    # ---- validation -----------------------------------------------------------------------
    def _validate(self):
        where = f"space {self.name!r}"
        self._validate_stages(where)
        if not self.ops:
            raise NeasError(f"{where}: 'ops' is empty")
        if len(set(self.ops)) != len(self.ops):
            raise NeasError(f"{where}: 'ops' lists an op twice: {[str(o) for o in self.ops]}")
        if self.num_paths < 1:
            raise NeasError(f"{where}: num_paths must be at least 1 (1: a single network), got {self.num_paths}")
        if self.stem_stride not in (1, 2):
            raise NeasError(f"{where}: stem_stride must be 1 or 2, got {self.stem_stride}")
        for key in (
            "input_size",
            "in_channels",
            "stem_channels",
            "first_block_channels",
            "head_channels",
            "feature_channels",
        ):
            if getattr(self, key) < 1:
                raise NeasError(f"{where}: {key} must be positive, got {getattr(self, key)}")
        if not 0 < self.width_mult <= MAX_WIDTH_MULT:  # also refuses nan and inf
            raise NeasError(f"{where}: width_mult must be a number in (0, {MAX_WIDTH_MULT:g}], got {self.width_mult}")
        self._validate_sizes(where)
        if not 0.0 <= self.dropout < 1.0:
            raise NeasError(f"{where}: dropout must be in [0, 1), got {self.dropout}")
        n = sum(s.layers for s in self.stages)
        lo, hi = self.split
        if not 0 <= lo <= hi <= n:
            raise NeasError(
                f"{where}: split range [{lo}, {hi}] must satisfy 0 <= min <= max <= {n} (the number of searchable "
                "layers)"
            )
        mbconv = sum(not o.is_skip for o in self.ops)
        if mbconv < self.num_paths:
            raise NeasError(
                f"{where}: a first-of-stage layer needs {self.num_paths} distinct non-skip ops for "
                f"{self.num_paths} paths, but 'ops' has only {mbconv}"
            )

    def _validate_stages(self, where: str) -> None:
        if not self.stages:
            raise NeasError(f"{where}: 'stages' is empty; at least one stage is needed")
        for i, stage in enumerate(self.stages):
            if stage.channels < 1 or stage.layers < 1:
                raise NeasError(f"{where}: stages[{i}] needs channels >= 1 and layers >= 1, got {stage}")
            if stage.stride not in (1, 2):
                raise NeasError(f"{where}: stages[{i}].stride must be 1 or 2, got {stage.stride}")

    def _validate_sizes(self, where: str) -> None:
        """Upper bounds on every size, checked before any width is derived or any module is built."""
        if self.input_size > MAX_INPUT_SIZE:
            raise NeasError(f"{where}: input_size must be at most {MAX_INPUT_SIZE}, got {self.input_size}")
        widths = {
            "stem_channels": self.stem_channels,
            "first_block_channels": self.first_block_channels,
            "head_channels": self.head_channels,
            "feature_channels": self.feature_channels,
            "in_channels": self.in_channels,
            **{f"stages[{i}].channels": s.channels for i, s in enumerate(self.stages)},
        }
        for key, value in widths.items():
            if value * self.width_mult > MAX_CHANNELS:
                raise NeasError(
                    f"{where}: {key}={value} (x width_mult {self.width_mult:g}) exceeds {MAX_CHANNELS} channels"
                )
        layers = sum(s.layers for s in self.stages)
        if layers > MAX_LAYERS:
            raise NeasError(f"{where}: {layers} searchable layers; at most {MAX_LAYERS} are accepted")
