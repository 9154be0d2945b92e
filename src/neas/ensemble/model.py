"""The plain ensemble network: only the chosen blocks, no supernet machinery (docs/DESIGN.md §3).

Its modules are the pieces of its arch's layout (:func:`neas.space.layout.arch_pieces`), and its
state_dict follows the released NEAS checkpoints: ``conv_stem``, ``bn1``, ``sharing_blocks.0.<j>``
(L0 then the shared non-skip blocks), ``blocks.<k>.0.<j>`` (path k's non-skip private blocks, then
its head's last block), ``conv_heads.<k>``, ``classifiers.<k>``. A piece is found at these paths
whenever it runs, so surgery on the module tree (BN freezing, fusion, quantization) takes effect.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
from timm.models._efficientnet_builder import efficientnet_init_weights

from neas.errors import NeasError
from neas.nn import PieceSite, make_piece, run_layout
from neas.space import HEAD, LAYER, STEM, EnsembleArch, Piece, SearchSpace, arch_pieces, path_pieces, trunk_pieces

__all__ = ["DeepEnsemble", "EnsembleNet", "build_ensemble"]


class EnsembleNet(nn.Module):
    """An ensemble of K paths that share a trunk: the plain network of an arch (no supernet machinery).

    Args:
        space: the search space of ``arch``.
        arch: the ensemble.
        num_classes: classifier outputs of every head.
        scale_shared_grad: divide the gradient entering the trunk by K.
        modules: the module of each piece of ``arch``, as :func:`~neas.nn.make_piece` builds them
            (the stem a ``Sequential(conv_stem, bn1)``, a head a ``PathHead``), to register instead
            of building and initialising new ones: a network over existing modules (:meth:`select`).

    Each piece's modules are found at their submodule paths whenever it runs
    (:class:`~neas.nn.PieceSite`): a module replaced in the tree is the one that runs.

    Calling it, ``net(x)`` with ``x`` (B, 3, S, S) normalised images, returns the mean of the K
    paths' logits, (B, num_classes); :meth:`path_logits` returns the K logits. Build one with
    :func:`build_ensemble`, load a trained one with :func:`~neas.ensemble.io.load_ensemble`.

    Example:
        >>> import torch
        >>> from neas import EnsembleArch, EnsembleNet, SearchSpace
        >>> space = SearchSpace.preset("tiny")
        >>> net = EnsembleNet(space, EnsembleArch.sample(space, 0), num_classes=10).eval()
        >>> net(torch.zeros(1, 3, 32, 32)).shape, len(net.path_logits(torch.zeros(1, 3, 32, 32)))
        (torch.Size([1, 10]), 2)

    Attributes:
        temperature: None (the default: ``forward`` returns the raw mean logits) or the temperature
            ``forward`` divides them by: the one rule of the Python model, the ONNX export and the timm
            model (``neas.load_ensemble`` sets the stored one; set it to None for raw logits).
            :meth:`path_logits` is always raw; :meth:`select` does not carry it over.
    """

    temperature: float | None = None

    def __init__(
        self,
        space: SearchSpace,
        arch: EnsembleArch,
        num_classes: int,
        scale_shared_grad: bool = True,
        modules: dict[Piece, nn.Module] | None = None,
    ):
        super().__init__()
        arch.validate(space)
        if num_classes < 1:
            raise NeasError(f"num_classes must be positive, got {num_classes}")
        self.space, self.arch, self.num_classes = space, arch, num_classes
        self.scale_shared_grad = scale_shared_grad
        fresh = modules is None
        if fresh:
            modules = {piece: make_piece(space, piece, num_classes) for piece in arch_pieces(arch)}
        elif set(modules) != set(arch_pieces(arch)):
            raise NeasError("modules: expected one module for each piece of the arch (neas.space.arch_pieces)")
        self.conv_stem, self.bn1 = modules[Piece(STEM)]
        trunk = [modules[p] for p in trunk_pieces(arch) if p.kind != STEM]  # L0, the shared layers
        self.sharing_blocks = nn.Sequential(nn.Sequential(*trunk))
        heads = [modules[Piece(HEAD, k)] for k in range(arch.num_paths)]
        private = [[modules[p] for p in path_pieces(arch, k) if p.kind == LAYER] for k in range(arch.num_paths)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Sequential(*layers, head.last_block)) for layers, head in zip(private, heads)
        )
        self.conv_heads = nn.ModuleList(head.conv_head for head in heads)
        self.classifiers = nn.ModuleList(head.classifier for head in heads)
        if fresh:
            efficientnet_init_weights(self)  # timm's (TensorFlow) init: fan-out normal convs, unit BN
        self._sites = _sites(arch, space.dropout)  # paths, not modules: nothing outside the tree

    def piece_module(self, piece: Piece) -> nn.Module:
        """The module that runs ``piece``, one of the pieces of this network's arch: a registered
        module, or for the stem and a head one built now over the registered ones."""
        return self._sites[piece].module(self)

    def run_piece(self, piece: Piece, x: torch.Tensor):
        """Runs ``piece`` on its input with the modules registered now (a head: logits and features)."""
        return self._sites[piece].run(self, x)

    def path_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per path: logits (B, num_classes) and pooled penultimate features (B, feature_channels)."""
        return run_layout(self.arch, self.run_piece, x, self.scale_shared_grad)

    def path_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> K logits, each (B, num_classes)."""
        return [logits for logits, _ in self.path_outputs(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> mean of the K path logits, (B, num_classes), divided by :attr:`temperature`
        when one is set (``neas.load_ensemble`` sets the stored one)."""
        logits = torch.stack(self.path_logits(x)).mean(0)
        return logits if self.temperature is None else logits / self.temperature

    @property
    def num_paths(self) -> int:
        return self.arch.num_paths

    def select(self, paths: list[int]) -> EnsembleNet:
        """The sub-ensemble of ``paths`` (in that order) over this network's modules (shared, not
        copied): its space has ``len(paths)`` paths and this split point."""
        paths = list(paths)
        if not paths or len(set(paths)) != len(paths) or not all(0 <= k < self.arch.num_paths for k in paths):
            raise NeasError(f"paths {list(paths)}: expected distinct path indices in 0..{self.arch.num_paths - 1}")
        single = len(paths) == 1  # a single network shares nothing: split 0, its layers all its own
        split = 0 if single else self.arch.split
        space = dataclasses.replace(self.space, num_paths=len(paths), split=(split, split))
        arch = EnsembleArch(split, tuple(self.arch.paths[k] for k in paths), distinct=self.arch.distinct)
        # the trunk then the chosen paths, in walking order: the sub-ensemble's pieces, one path or many
        # (one path: L0 alone is "shared", the shared layers start its own)
        pieces = [*trunk_pieces(self.arch), *(p for k in paths for p in path_pieces(self.arch, k))]
        modules = dict(zip(arch_pieces(arch), map(self.piece_module, pieces), strict=True))
        return EnsembleNet(space, arch, self.num_classes, self.scale_shared_grad, modules).train(self.training)


def _sites(arch: EnsembleArch, dropout: float) -> dict[Piece, PieceSite]:
    """Where :class:`EnsembleNet` registers each piece's modules: the released checkpoints' layout
    (the module docstring)."""
    sites = {Piece(STEM): PieceSite(STEM, ("conv_stem", "bn1"))}
    trunk = [p for p in trunk_pieces(arch) if p.kind != STEM]
    sites.update({p: PieceSite(p.kind, (f"sharing_blocks.0.{j}",)) for j, p in enumerate(trunk)})
    for k in range(arch.num_paths):
        *layers, head = path_pieces(arch, k)
        sites.update({p: PieceSite(p.kind, (f"blocks.{k}.0.{j}",)) for j, p in enumerate(layers)})
        parts = (f"blocks.{k}.0.{len(layers)}", f"conv_heads.{k}", f"classifiers.{k}")
        sites[head] = PieceSite(HEAD, parts, dropout)
    return sites


class DeepEnsemble(nn.Module):
    """Independently trained networks averaged at the logits (a deep ensemble, Lakshminarayanan
    et al. 2017): every member's paths are its paths, nothing is shared, not even the stem."""

    def __init__(self, members: list[EnsembleNet]):
        super().__init__()
        if not members or any(
            m.num_classes != members[0].num_classes or m.space.input_size != members[0].space.input_size
            for m in members
        ):
            raise NeasError("a deep ensemble needs members with one input size and one set of classes")
        self.members = nn.ModuleList(members)
        self.space, self.num_classes = members[0].space, members[0].num_classes

    @property
    def num_paths(self) -> int:
        return sum(m.num_paths for m in self.members)

    def path_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [logits for m in self.members for logits in m.path_logits(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.path_logits(x)).mean(0)


def build_ensemble(
    space: SearchSpace, arch: EnsembleArch, num_classes: int, scale_shared_grad: bool = True
) -> EnsembleNet:
    """Builds the plain network of ``arch``, freshly initialised (timm's EfficientNet init).

    Args:
        space: the search space of ``arch``.
        arch: the ensemble.
        num_classes: outputs of every classifier.
        scale_shared_grad: divide the gradient entering the shared trunk by K while training.

    Returns:
        An :class:`EnsembleNet` in train mode (weights inherited from a supernet: ``Supernet.extract``).

    Example:
        >>> import torch
        >>> from neas import EnsembleArch, SearchSpace, build_ensemble
        >>> space = SearchSpace.preset("tiny")
        >>> net = build_ensemble(space, EnsembleArch.sample(space, 0), num_classes=10).eval()
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return EnsembleNet(space, arch, num_classes, scale_shared_grad)
