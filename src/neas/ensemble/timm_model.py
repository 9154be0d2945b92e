"""A neas ensemble as a timm model (issue 38, item 1): built by timm's ``build_model_with_cfg``, with
its ``pretrained_cfg``, its weights loaded through timm's machinery and checked by neas, and timm's
feature-extraction convention for ``features_only``. The names are registered in
:mod:`neas.ensemble.timm_registry`; this module is imported when one of them is created.

How weights load:

- a file (``pretrained_cfg_overlay=dict(file=...)``): timm's ``custom_load`` path calls
  :meth:`TimmEnsemble.load_pretrained`, which reads a released ``.pth.tar`` with neas's safe loader
  (:func:`neas.ensemble.official.read_official_state_dict`, EMA weights when present) or a safetensors
  file, and loads it only when every key and shape fits (heads re-initialised when ``num_classes``
  differs, the stem adapted by timm's ``adapt_input_conv`` when ``in_chans`` does);
- a folder (``local-dir:`` / ``hf-hub:``): timm reads ``model.safetensors`` and :func:`check_pretrained`
  (the ``pretrained_filter_fn``) checks it against the model ``config.json`` describes, and for a local
  folder ``config.json`` against the weights file's own record (:func:`neas.ensemble.io.check_timm_folder`),
  before timm loads it: a mismatch is one :class:`~neas.errors.NeasError` (a ``ValueError``) line.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from timm.models._efficientnet_builder import efficientnet_init_weights
from timm.models._features import FeatureInfo, feature_take_indices
from timm.models._manipulate import adapt_input_conv

from neas.ensemble.features import EnsembleFeatures, stage_ends
from neas.ensemble.io import FORMAT, check_timm_folder
from neas.ensemble.model import EnsembleNet
from neas.ensemble.official import IGNORED_SUFFIXES, NOT_A_CHECKPOINT, checkpoint_format, read_official_state_dict
from neas.ensemble.settings import parse_feature_mode
from neas.errors import NeasError, show
from neas.io import check_matching, load_weights, read_metadata
from neas.records import check_temperature
from neas.runfiles import MODEL
from neas.space import EnsembleArch, SearchSpace

__all__ = ["EnsembleFeatureList", "TimmEnsemble", "check_pretrained", "create", "read_weights"]

log = logging.getLogger(__name__)


def _given(value, what: str, parse, resolve, forms: str):
    """A model argument: its JSON object (``parse``), a name or file (``resolve``), or the object itself."""
    if value is None:
        raise NeasError(f"{what}: neas_ensemble needs the model argument {what} ({forms})")
    return parse(value) if isinstance(value, dict) else resolve(value)


def _arch(value) -> EnsembleArch:
    return _given(value, "arch", EnsembleArch.from_json, EnsembleArch.resolve, "a preset, an arch.json or its JSON")


def _space(value) -> SearchSpace:
    return _given(value, "space", SearchSpace.from_dict, SearchSpace.resolve, "a preset, a YAML file or its JSON")


def _levels(space: SearchSpace) -> int:
    """How many output strides the space has (timm's feature levels)."""
    strides, stride = {space.stem_stride}, space.stem_stride
    for spec in space.layers:
        stride *= spec.stride
        strides.add(stride)
    return len(strides)


class TimmEnsemble(EnsembleNet):
    """:class:`~neas.ensemble.model.EnsembleNet` with timm's model interface.

    Args:
        arch: the ensemble (a preset name, an ``arch.json``, its JSON object or an ``EnsembleArch``).
        space: its search space (a preset, a YAML file, its JSON object or a ``SearchSpace``).
        num_classes: every head's outputs.
        in_chans: image channels (the stem's input; the space's ``in_channels`` replaced).
        temperature: what ``forward`` divides the mean logits by (None: raw logits), as
            ``neas.load_ensemble`` and the ONNX export do; a folder's ``config.json`` carries the fitted one.
        drop_rate: the heads' dropout before the classifier (default: the space's).

    ``feature_info`` lists the output strides (timm's ``num_chs``, ``reduction``, ``module``: the layer
    ``L<i>`` whose output it is, per path after the split point).
    """

    def __init__(self, arch, space, num_classes: int = 1000, in_chans: int = 3, temperature=None, drop_rate=None):
        space = _space(space)
        if in_chans != space.in_channels:
            space = dataclasses.replace(space, in_channels=in_chans)
        if drop_rate is not None:
            space = dataclasses.replace(space, dropout=float(drop_rate))
        super().__init__(space, _arch(arch), num_classes)
        self.temperature = check_temperature(temperature, "temperature", nullable=True)
        self.in_chans = in_chans
        self.num_features = space.channels(space.feature_channels)
        self.feature_info = [
            {"num_chs": channels, "reduction": stride, "module": f"L{index}"}
            for stride, (index, channels) in stage_ends(self).items()
        ]

    def get_classifier(self) -> nn.Module:
        """Every path's classifier (timm's ``get_classifier``): a ``ModuleList``."""
        return self.classifiers

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised heads of ``num_classes`` outputs on every path; :attr:`temperature` is
        cleared (None: raw logits), since it was fitted to the old heads."""
        if num_classes < 1:
            raise NeasError(f"num_classes must be positive, got {show(num_classes)}")
        for k, old in enumerate(self.classifiers):
            head = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
            efficientnet_init_weights(head)
            self.classifiers[k] = head
        self.num_classes = num_classes
        self.temperature = None

    def load_pretrained(self, path: str, *_) -> None:
        """timm's ``custom_load``: the weights of ``path`` (a released ``.pth.tar`` or a safetensors file),
        read safely and loaded only when every key and shape fits; heads that differ in ``num_classes`` keep
        their fresh initialisation (and :attr:`temperature`, fitted to the old heads, is cleared) and a stem
        that differs in ``in_chans`` is adapted (timm's rule)."""
        state = read_weights(path)
        own = self.state_dict()
        heads = [k for k in own if k.startswith("classifiers.")]
        if any(k in state and state[k].shape != own[k].shape for k in heads):
            rows = state.get("classifiers.0.weight", torch.empty(0)).shape[:1]
            log.info(
                "%s: %s classes in the file, %d in the model: heads re-initialised, raw logits (no temperature)",
                path,
                *rows,
                self.num_classes,
            )
            state.update({k: own[k] for k in heads})
            self.temperature = None
        stem = state.get("conv_stem.weight")
        if stem is not None and stem.dim() == 4 and stem.shape[1] != self.in_chans:
            state["conv_stem.weight"] = adapt_input_conv(self.in_chans, stem)
        name = self.pretrained_cfg.get("architecture", "the model")
        check_matching(self, state, f"{path}: does not fit {name}", source="file")
        self.load_state_dict(state)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read without running code from it: a released ``.pth.tar`` (a torch
    zip or pickle file: :func:`~neas.ensemble.official.read_official_state_dict`, EMA weights when present,
    the unused ``conv_dwl``/``bn4`` tensors dropped) or a safetensors file (a neas ``model.safetensors``)."""
    path = Path(path)
    if path.is_dir() and (path / MODEL).is_file():
        path = path / MODEL
    if not path.is_file():
        raise NeasError(f"{path}: no such weights file")
    kind = checkpoint_format(path)
    if kind == "torch":
        return {k: v for k, v in read_official_state_dict(path).items() if not k.endswith(IGNORED_SUFFIXES)}
    if kind == "safetensors":
        return load_weights(path)[0]
    raise NeasError(f"{path}: {NOT_A_CHECKPOINT}")


class EnsembleFeatureList(nn.Module):
    """``features_only=True``: the ensemble's multi-scale maps
    (:class:`~neas.ensemble.features.EnsembleFeatures`) in timm's convention: ``forward`` returns the list
    of maps at ``out_indices`` (indices into the model's ``feature_info``, in increasing stride) and
    ``feature_info`` is timm's ``FeatureInfo`` (``channels()``, ``reduction()``). ``feature_mode``:
    what a map after the split point is (``mean`` of the paths, their ``concat``, or ``path:J``)."""

    def __init__(self, model: TimmEnsemble, out_indices=(0, 1, 2, 3, 4), feature_mode: str = "mean"):
        super().__init__()
        levels = [dict(level) for level in model.feature_info]
        try:
            indices, _ = feature_take_indices(len(levels), out_indices)
        except AssertionError:
            raise NeasError(
                f"out_indices: {show(out_indices)} is out of range for {len(levels)} feature levels "
                f"(strides {[level['reduction'] for level in levels]})"
            ) from None
        indices = sorted(set(indices))
        self.body = EnsembleFeatures(model, [levels[i]["reduction"] for i in indices], feature_mode)
        for i, channels in zip(indices, self.body.out_channels):
            levels[i]["num_chs"] = channels  # "concat" widens the maps after the split point
        self.feature_info = FeatureInfo(levels, tuple(indices))
        self.pretrained_cfg = model.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> the maps at ``out_indices``, each (B, channels, H / stride, W / stride)."""
        return list(self.body(x).values())


def _heads_differ(state: dict, own: dict) -> bool:
    key = "classifiers.0.weight"
    return key in state and key in own and state[key].shape != own[key].shape


def check_pretrained(state: dict, model: TimmEnsemble) -> dict:
    """timm's ``pretrained_filter_fn`` for folders (``local-dir:``, ``hf-hub:``): the weights timm read
    must fit the model ``config.json`` describes (heads aside when ``num_classes`` was changed, the stem
    aside when ``in_chans`` was), and a local folder's ``config.json`` must match its weights file's record.
    Fresh heads clear the model's ``temperature`` (``config.json``'s was fitted to the folder's heads)."""
    where = model.pretrained_cfg.get("file") or model.pretrained_cfg.get("hf_hub_id") or "the weights"
    # a folder neas wrote (its weights carry their record); one re-saved by timm has plain weights, checked below
    if model.pretrained_cfg.get("source") == "local-dir" and read_metadata(Path(where) / MODEL).get("format") == FORMAT:
        check_timm_folder(where)
    own = model.state_dict()
    skip = set()
    if _heads_differ(state, own):
        skip = {k for k in own if k.startswith("classifiers.")}
        model.temperature = None
    stem = state.get("conv_stem.weight")
    if stem is not None and stem.dim() == 4 and stem.shape[1] != model.in_chans:
        skip.add("conv_stem.weight")
    check_matching(model, state, f"{where}: its weights do not fit the model its config.json describes", skip=skip)
    return state


def _overlay(variant: str, pretrained: bool, pretrained_cfg, overlay: dict | None, space, arch) -> dict:
    """The pretrained_cfg entries that follow from the arch and space, and ``custom_load`` for a weights file
    (neas's safe loader); refuses ``pretrained=True`` without weights (neas downloads nothing)."""
    overlay = dict(overlay or {})
    overlay.setdefault("input_size", (space.in_channels, space.input_size, space.input_size))
    overlay.setdefault("classifier", tuple(f"classifiers.{k}" for k in range(arch.num_paths)))
    resolved = resolve_pretrained_cfg(variant, pretrained_cfg, overlay)
    if resolved.file and resolved.source != "local-dir":
        overlay.setdefault("custom_load", True)
    if pretrained and not (resolved.file or resolved.url or resolved.hf_hub_id or resolved.state_dict):
        raise NeasError(
            f"{variant}: pretrained=True needs weights, and neas downloads none: pass "
            f"pretrained_cfg_overlay=dict(file='{variant}.pth.tar') (a released checkpoint or a neas "
            "model.safetensors), or create 'local-dir:DIR' for a `neas export --format timm` folder"
        )
    return overlay


def _released(variant: str, preset: str, arch, space) -> tuple[EnsembleArch, SearchSpace]:
    """A released name's arch and space; model arguments that say otherwise (a folder's config.json) are refused."""
    fixed = EnsembleArch.preset(preset), SearchSpace.preset("imagenet")
    given = (fixed[0] if arch is None else _arch(arch), fixed[1] if space is None else _space(space))
    if given[0] != fixed[0] or given[1].to_dict() != fixed[1].to_dict():
        raise NeasError(
            f"{variant} is the released {preset.upper()} in the imagenet space; the model arguments arch and space "
            "name another ensemble (build it as neas_ensemble)"
        )
    return fixed


def create(
    variant: str,
    pretrained: bool = False,
    pretrained_cfg=None,
    pretrained_cfg_overlay=None,
    released: str | None = None,
    **kwargs,
):
    """Builds ``variant`` with timm's ``build_model_with_cfg`` (see the module docstring); ``released``: the arch
    preset of a released name; ``kwargs``: ``arch``, ``space`` and :class:`TimmEnsemble`'s other arguments,
    timm's ``features_only`` / ``out_indices`` and neas's ``feature_mode``."""
    arch, space = kwargs.pop("arch", None), kwargs.pop("space", None)
    arch, space = _released(variant, released, arch, space) if released else (_arch(arch), _space(space))
    features = kwargs.get("features_only", False)
    mode = kwargs.pop("feature_mode", "mean")
    parse_feature_mode(mode, arch.num_paths)
    if mode != "mean" and not features:
        raise NeasError(f"feature_mode {mode!r} is for features_only=True")
    feature_cfg = {"feature_cls": EnsembleFeatureList, "feature_mode": mode}
    if features and "out_indices" not in kwargs:
        feature_cfg["out_indices"] = tuple(range(_levels(space)))
    overlay = _overlay(variant, pretrained, pretrained_cfg, pretrained_cfg_overlay, space, arch)
    return build_model_with_cfg(
        TimmEnsemble,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=overlay,
        feature_cfg=feature_cfg,
        pretrained_filter_fn=check_pretrained,
        arch=arch,
        space=space,
        **kwargs,
    )
