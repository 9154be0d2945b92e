"""The shrunk space: per layer, the operation combinations that survive shrinking (§3.2).

Shrinking removes combinations (sets of K distinct ops) of private layers. A layer's shared
op may be any op that still appears in one of its surviving combinations (docs/DESIGN.md §6.6).
"""

from __future__ import annotations

from dataclasses import dataclass

from neas.errors import NeasError
from neas.space.ops import Op, parse_op
from neas.space.space import SearchSpace

__all__ = ["Combination", "ShrunkSpace"]

Combination = tuple[Op, ...]  # K distinct ops, in the space's op order


@dataclass(frozen=True)
class ShrunkSpace:
    """A search space with, per searchable layer, the op combinations that survived shrinking (§3.2).

    Args:
        space: the full search space.
        combinations: per searchable layer L1..Ln, the surviving combinations, each K distinct ops
            (sorted into the space's op order when built).

    Example:
        >>> from neas import SearchSpace, ShrunkSpace
        >>> full = ShrunkSpace.full(SearchSpace.preset("tiny"))
        >>> full.num_combinations
        32
        >>> full.without({3: [("k3e3", "k3e6")]}).num_combinations
        31
    """

    space: SearchSpace
    combinations: tuple[tuple[Combination, ...], ...]  # [layer L1..Ln][combination]

    def __post_init__(self):
        if len(self.combinations) != self.space.num_layers:
            raise NeasError(
                f"shrunk space: {len(self.combinations)} layers given, the space has {self.space.num_layers}"
            )
        fixed = []
        for spec, combos in zip(self.space.layers, self.combinations):
            if not combos:
                raise NeasError(f"shrunk space: layer {spec.name} has no surviving combination")
            full = set(self.space.combinations(spec.index))
            normed = tuple(self.canonical(c) for c in combos)
            for combo in normed:
                if combo not in full:
                    raise NeasError(
                        f"shrunk space: layer {spec.name}: {'/'.join(map(str, combo))} is not a combination of "
                        f"{self.space.num_paths} distinct candidate ops of this layer"
                    )
            fixed.append(tuple(sorted(set(normed), key=self._order)))
        object.__setattr__(self, "combinations", tuple(fixed))

    @staticmethod
    def full(space: SearchSpace) -> ShrunkSpace:
        """The unshrunk space: every combination of every layer."""
        return ShrunkSpace(space, tuple(space.combinations(spec.index) for spec in space.layers))

    def canonical(self, ops) -> Combination:
        """Sorts a set of ops into the space's op order."""
        index = {op: i for i, op in enumerate(self.space.ops)}
        ops = tuple(parse_op(o) for o in ops)
        return tuple(sorted(ops, key=lambda o: index.get(o, len(index))))

    def _order(self, combo: Combination):
        index = {op: i for i, op in enumerate(self.space.ops)}
        return tuple(index[o] for o in combo)

    def layer_combinations(self, index: int) -> tuple[Combination, ...]:
        self.space.layer(index)
        return self.combinations[index - 1]

    def shared_ops(self, index: int) -> tuple[Op, ...]:
        """Ops a shared layer ``L{index}`` may use: those in some surviving combination."""
        present = {op for combo in self.layer_combinations(index) for op in combo}
        return tuple(op for op in self.space.layer(index).ops if op in present)

    @property
    def num_combinations(self) -> int:
        return sum(len(c) for c in self.combinations)

    def without(self, drops: dict[int, list[Combination]]) -> ShrunkSpace:
        """A copy with the given combinations removed, ``{layer index: [combination, ...]}``."""
        layers = [list(c) for c in self.combinations]
        for index, combos in drops.items():
            for combo in combos:
                combo = self.canonical(combo)
                if combo not in layers[index - 1]:
                    raise NeasError(f"layer L{index}: {'/'.join(map(str, combo))} is not in the shrunk space")
                layers[index - 1].remove(combo)
        return ShrunkSpace(self.space, tuple(tuple(c) for c in layers))

    def to_json(self) -> list[list[list[str]]]:
        return [[[str(o) for o in combo] for combo in combos] for combos in self.combinations]

    @staticmethod
    def from_json(space: SearchSpace, data) -> ShrunkSpace:
        if not isinstance(data, list):
            raise NeasError("shrunk space: expected a list of layers of combinations")
        return ShrunkSpace(space, tuple(tuple(tuple(parse_op(o) for o in c) for c in combos) for combos in data))
