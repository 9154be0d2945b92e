"""Multi-scale features of a plain ensemble, for a detector's neck (issue 27, item 1).

:class:`EnsembleFeatures` wraps an :class:`~neas.ensemble.model.EnsembleNet` and returns, per output
stride, the output of the last layer at that stride (the last block of the stage), as the ordered
dict of string keys torchvision's ``FeaturePyramidNetwork`` and ``BackboneWithFPN`` take, with the
channel count of each map in ``out_channels``. It walks the network's layout itself
(:func:`neas.space.layout.trunk_pieces` / :func:`~neas.space.layout.path_pieces`, each piece run by
``EnsembleNet.run_piece``), running only what the maps need and combining the paths' maps as
``mode`` asks, which torchvision's ``create_feature_extractor`` (nodes of the whole traced network)
does not.

A map whose layer is at or before the split point is the shared trunk's, computed once. A map after
it exists once per path, and ``mode`` says which map the detector sees:

- ``"mean"`` (the default): the element-wise mean over the K paths. It keeps one path's channel
  count, so a neck built for a single network needs no change, and it is the same averaging the
  ensemble does at its logits.
- ``"concat"``: the K maps concatenated along the channels (``out_channels`` times K).
- ``"path:J"``: path J's map alone (only path J's private layers run).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from neas.ensemble.model import EnsembleNet
from neas.ensemble.settings import FEATURE_MODES, parse_feature_mode
from neas.errors import NeasError
from neas.space import FIRST, HEAD, LAYER, STEM, Piece, path_pieces, trunk_pieces

__all__ = ["HEAD_KEY", "MODES", "EnsembleFeatures", "stage_ends"]

MODES = FEATURE_MODES  # neas.options owns the names and their parsing (parse_feature_mode)
HEAD_KEY = "head"  # the key of the last 1x1 conv's map (each path's '960 conv', before pooling)


def stage_ends(net: EnsembleNet) -> dict[int, tuple[int, int]]:
    """``{output stride: (layer index, channels)}`` of the last layer at each stride, in
    increasing stride; layer index 0 is the fixed block L0 (which keeps the stem's stride)."""
    space = net.space
    stride = space.stem_stride
    ends = {stride: (0, space.channels(space.first_block_channels))}
    for spec in space.layers:
        stride *= spec.stride
        ends[stride] = (spec.index, spec.out_channels)
    return ends


def _position(piece: Piece, num_layers: int) -> int:
    """Where a piece sits in the walk: -1 the stem, 0 L0, i the layer L{i}, num_layers + 1 the head."""
    return {STEM: -1, FIRST: 0, LAYER: piece.index, HEAD: num_layers + 1}[piece.kind]


class EnsembleFeatures(nn.Module):
    """The multi-scale feature maps of an ensemble (see the module docstring for the modes).

    Args:
        net: the plain ensemble; its modules are reused (not copied), its heads never run.
        strides: output strides to return, among those of ``net``'s space (imagenet: 2, 4, 8, 16,
            32); returned in increasing order under the keys ``"8"``, ``"16"``, ...
        mode: ``"mean"``, ``"concat"`` or ``"path:J"``: what a map after the split point is.
        last_conv: also return the last 1x1 conv's map (stride of the last stage) under ``"head"``.

    Attributes:
        out_channels: the channel count of each returned map, in order (a FPN's ``in_channels_list``).
        strides: the returned strides, in order.

    Gradients: the trunk gets the mean (``mean``), the sum (``concat``) or one path's (``path:J``)
    of the gradients of the paths' maps, plus those of the shared maps; ``scale_shared_grad`` is not
    applied here, since ``mean`` already averages over the paths as it does at the logits.
    """

    def __init__(self, net: EnsembleNet, strides=(8, 16, 32), mode: str = "mean", last_conv: bool = False):
        super().__init__()
        self.net, self.mode, self.last_conv = net, mode, last_conv
        self.path = parse_feature_mode(mode, net.num_paths)
        ends = stage_ends(net)
        unknown = [s for s in strides if s not in ends]
        if unknown or not strides:
            raise NeasError(
                f"strides {list(strides)}: space {net.space.name!r} has output strides {list(ends)} "
                f"(input size independent); choose among those"
            )
        self.strides = sorted(set(strides))
        n = net.space.num_layers
        # {layer position: key}: what is recorded where, shared (at or before the split) or per path
        self._keys = {ends[s][0]: str(s) for s in self.strides}
        channels = [ends[s][1] for s in self.strides]
        if last_conv:
            self._keys[n + 1] = HEAD_KEY
            channels.append(net.space.channels(net.space.head_channels))
        split = net.arch.split
        widen = net.num_paths if mode == "concat" else 1
        self.out_channels = [c * widen if pos > split else c for pos, c in zip(self._keys, channels)]

    @property
    def paths(self) -> list[int]:
        """The paths whose private layers run."""
        return list(range(self.net.num_paths)) if self.path is None else [self.path]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """(B, 3, H, W) -> ``{key: (B, C, H / stride, W / stride)}`` in increasing stride (then
        ``"head"``), C as in ``out_channels``."""
        split, n = self.net.arch.split, self.net.space.num_layers
        private = {pos: key for pos, key in self._keys.items() if pos > split}
        shared_keys = {pos: key for pos, key in self._keys.items() if pos <= split}
        stop = split if private else max(shared_keys)  # the trunk runs to the split only when a path follows
        x, maps = self._walk(trunk_pieces(self.net.arch, skips=True), x, shared_keys, stop, n)
        if private:
            per_path = [
                self._walk(path_pieces(self.net.arch, k, skips=True), x, private, max(private), n)[1]
                for k in self.paths
            ]
            maps.update({key: self._combine([m[key] for m in per_path], key) for key in private.values()})
        return OrderedDict((key, maps[key]) for key in self._keys.values())

    def _walk(self, pieces, x: torch.Tensor, keys: dict[int, str], stop: int, num_layers: int):
        """Runs ``pieces`` in order up to position ``stop`` (a skip layer passes x on; a head runs
        only its last block), recording x under ``keys[position]``. Returns x and the maps."""
        maps = {}
        for piece in pieces:
            pos = _position(piece, num_layers)
            if pos > stop:
                break
            if piece.runs:
                x = self.net.piece_module(piece).last_block(x) if piece.kind == HEAD else self.net.run_piece(piece, x)
            if pos in keys:
                maps[keys[pos]] = x
        return x, maps

    def _combine(self, maps: list[torch.Tensor], key: str) -> torch.Tensor:
        """The paths' maps at ``key`` as the mode asks: their mean, their concatenation or path J's."""
        if self.path is not None:
            return maps[0]
        if len({tuple(int(d) for d in m.shape) for m in maps}) != 1:  # ints: under ONNX tracing a size is a tensor
            shapes = ", ".join(f"path {k}: {tuple(m.shape)}" for k, m in zip(self.paths, maps))
            raise NeasError(
                f"feature map {key!r}: the paths' maps differ in shape ({shapes}); mode {self.mode!r} "
                f"needs equal ones, use 'path:J'"
            )
        return torch.cat(maps, 1) if self.mode == "concat" else torch.stack(maps).mean(0)
