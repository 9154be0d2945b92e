"""Measured latency: the model of a per-(layer, op) table timed on one machine (docs/DESIGN.md §5).

Each piece of a space (``neas.space.layout``: stem + L0, every layer's every op, one head) is timed
alone on an input of the shape it sees in the network. An ensemble's latency is the sum over the
pieces it runs, counting shared layers once; the K paths are summed (``sequential``, one device
running them in turn) or max-ed (``parallel``); a fitted overhead adds what timing pieces alone
misses. Measuring a table, fitting its overhead and validating it build plain ensembles:
``neas.ensemble.latency``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neas.errors import NeasError
from neas.io import read_json, write_json
from neas.space import FIRST, HEAD, LAYER, STEM, EnsembleArch, Piece, SearchSpace, path_pieces, trunk_pieces

__all__ = ["LatencyTable", "check_table"]


@dataclass
class LatencyTable:
    """Latency in milliseconds of each piece of a space on one device and batch size."""

    space_name: str
    device: str
    batch_size: int
    input_size: int
    fixed_ms: float  # the stem and L0
    layers_ms: list[dict[str, float]]  # [layer][op name]
    head_ms: float
    runtime: str = "torch"  # what the pieces ran in: torch | onnxruntime
    overhead_ms: float = 0.0  # fitted: a constant per ensemble ...
    per_block_ms: float = 0.0  # ... a term per block run (what timing pieces alone misses) ...
    scale: float = 1.0  # ... and a factor on the pieces (a runtime that fuses across them runs the whole faster)
    fit: dict | None = None  # how the two were fitted (networks timed end to end, residuals)

    def piece_ms(self, piece: Piece) -> float:
        """The time of one piece (``fixed_ms`` holds the stem's and L0's)."""
        if piece.kind == LAYER:
            return self.layers_ms[piece.index - 1][str(piece.op)]
        return {STEM: self.fixed_ms, FIRST: 0.0, HEAD: self.head_ms}[piece.kind]

    def pieces_ms(self, arch: EnsembleArch, mode: str = "sequential") -> tuple[float, int]:
        """The sum of the ensemble's piece timings (a shared layer once) and how many blocks it runs
        (L0, the layers, the heads: every piece but the stem)."""

        def timed(pieces: tuple[Piece, ...]) -> tuple[float, int]:
            return sum(self.piece_ms(p) for p in pieces), sum(p.kind != STEM for p in pieces)

        shared, blocks = timed(trunk_pieces(arch))
        paths = [timed(path_pieces(arch, k)) for k in range(arch.num_paths)]
        if mode == "sequential":
            return shared + sum(ms for ms, _ in paths), blocks + sum(n for _, n in paths)
        ms, n = max(paths, key=lambda path: path[0])  # the slowest path
        return shared + ms, blocks + n

    def latency_ms(self, arch: EnsembleArch, mode: str = "sequential") -> float:
        """The predicted latency: the pieces, plus the fitted per-ensemble and per-block overhead."""
        ms, blocks = self.pieces_ms(arch, mode)
        return self.scale * ms + self.overhead_ms + self.per_block_ms * blocks

    def bounds(self, shrunk, mode: str = "sequential") -> tuple[float, float]:
        """Bounds on the latency of the ensembles of a shrunk space: exact for ``sequential`` paths
        (latency adds up layer by layer); for ``parallel`` ones, the slowest path is at least the
        mean of the paths and at most their sum."""
        space, k = shrunk.space, shrunk.space.num_paths
        lows, highs = [], []
        for s in space.split_points:
            shared_lo = shared_hi = private_lo = private_hi = 0.0
            for spec in space.layers:
                entry = self.layers_ms[spec.index - 1]
                if spec.index <= s:
                    times = [entry[str(op)] for op in shrunk.shared_ops(spec.index)]
                    shared_lo, shared_hi = shared_lo + min(times), shared_hi + max(times)
                else:
                    times = [sum(entry[str(op)] for op in combo) for combo in shrunk.layer_combinations(spec.index)]
                    private_lo, private_hi = private_lo + min(times), private_hi + max(times)
            base = self.fixed_ms
            if mode == "sequential":
                lows.append(base + shared_lo + private_lo + k * self.head_ms)
                highs.append(base + shared_hi + private_hi + k * self.head_ms)
            else:
                lows.append(base + shared_lo + private_lo / k + self.head_ms)
                highs.append(base + shared_hi + private_hi + self.head_ms)
        # the fitted overhead: from 1 block + K heads (every layer skipped) to every layer run by every path
        runs = k if mode == "sequential" else 1  # paths whose blocks add up
        few, many = 1 + runs, 1 + (space.num_layers + 1) * runs
        lo_extra = self.overhead_ms + min(self.per_block_ms * few, self.per_block_ms * many)
        hi_extra = self.overhead_ms + max(self.per_block_ms * few, self.per_block_ms * many)
        return self.scale * min(lows) + lo_extra, self.scale * max(highs) + hi_extra

    def fastest(self, shrunk) -> EnsembleArch:
        """The ensemble of the shrunk space with the smallest summed piece latency (exact for
        ``sequential`` paths without per-block overhead; a fast one otherwise)."""
        space = shrunk.space
        best = None
        for s in space.split_points:
            columns = []
            for spec in space.layers:
                entry = self.layers_ms[spec.index - 1]
                if spec.index <= s:
                    op = min(shrunk.shared_ops(spec.index), key=lambda o: (entry[str(o)], str(o)))
                    columns.append((op,) * space.num_paths)
                else:
                    combos = shrunk.layer_combinations(spec.index)
                    columns.append(min(combos, key=lambda c: (sum(entry[str(o)] for o in c), list(map(str, c)))))
            arch = EnsembleArch(s, tuple(tuple(col[k] for col in columns) for k in range(space.num_paths)))
            if best is None or self.latency_ms(arch) < self.latency_ms(best):
                best = arch
        return best

    def to_json(self) -> dict:
        return dict(self.__dict__)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @staticmethod
    def load(path: str | Path) -> LatencyTable:
        try:
            return LatencyTable(**read_json(path, "latency table"))
        except TypeError as exc:
            raise NeasError(f"{path}: not a latency table ({exc})") from None


def check_table(table: LatencyTable, space: SearchSpace) -> LatencyTable:
    """``table``, if it has an entry for every op of every layer of ``space``; else an error."""
    if len(table.layers_ms) != space.num_layers or any(
        set(entry) != {str(op) for op in spec.ops} for entry, spec in zip(table.layers_ms, space.layers)
    ):
        raise NeasError(f"latency table of space {table.space_name!r} does not fit space {space.name!r}")
    return table
