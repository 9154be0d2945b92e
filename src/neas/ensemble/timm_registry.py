"""neas's models in timm's registry: ``neas_s``, ``neas_m``, ``neas_l`` and ``neas_ensemble`` (issue 38).

Imported by ``import neas`` once timm is imported (:func:`neas.lazy.after_import`), so it must stay
cheap: it imports timm's registry and constants and neas's pure-Python presets only; each entrypoint
imports the model (:mod:`neas.ensemble.timm_model`) when it is called. The data config of the released
names is :data:`neas.ensemble.official.RELEASED_PREPROCESSING`'s, spelled in timm's constants (a test
holds them equal).

- ``neas_s`` / ``neas_m`` / ``neas_l``: the released architectures in the imagenet space (224 px,
  1000 classes). ``pretrained=True`` needs the released file, which neas never downloads::

      timm.create_model("neas_m", pretrained=True, pretrained_cfg_overlay=dict(file="neas_m.pth.tar"))

  It is read by neas's safe loader (:mod:`neas.ensemble.official`: globals listed before anything is
  unpickled, ``torch.load(weights_only=True)``), EMA weights when present.
- ``neas_ensemble``: any ensemble, from the model arguments ``arch`` (a preset name, an ``arch.json`` or
  its JSON object) and ``space`` (a preset, a YAML file or its JSON object); what a folder written by
  ``neas export --format timm`` names in its ``config.json``, loaded by ``local-dir:`` or ``hf-hub:``.

Every entrypoint takes timm's ``num_classes`` (fresh heads when it differs from the weights'),
``in_chans``, ``drop_rate`` (the heads' dropout), ``features_only`` / ``out_indices`` /
``feature_mode`` (``mean``, ``concat`` or ``path:J``) and ``temperature`` (what ``forward`` divides the
mean logits by; a folder's ``config.json`` carries the fitted one, cleared when the heads are fresh).
"""

from __future__ import annotations

from timm.data import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from neas.space.presets import TIMM_NAMES as RELEASED  # timm name -> neas arch preset

__all__ = ["RELEASED", "neas_ensemble", "neas_l", "neas_m", "neas_s"]


def _cfg(**kwargs) -> dict:
    """A pretrained_cfg: ImageNet's data config, the first conv and both paths' classifiers."""
    return {
        "input_size": (3, 224, 224),
        "crop_pct": DEFAULT_CROP_PCT,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "num_classes": 1000,
        "first_conv": "conv_stem",
        "classifier": ("classifiers.0", "classifiers.1"),
        "paper_name": "One-Shot Neural Ensemble Architecture Search by Diversity-Guided Search Space Shrinking",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        # the released checkpoints, evaluated by their authors at 224 px with timm's 0.875 crop; no URL:
        # the file is given with pretrained_cfg_overlay=dict(file=...)
        "neas_s": _cfg(description="NEAS-S, the released small ensemble (2 paths, ImageNet)"),
        "neas_m": _cfg(description="NEAS-M, the released medium ensemble (2 paths, ImageNet)"),
        "neas_l": _cfg(description="NEAS-L, the released large ensemble (2 paths, ImageNet)"),
        # any ensemble: its input size, classes and classifiers follow the arch and space given; the data
        # config of trained weights comes with them (a folder's config.json)
        "neas_ensemble": _cfg(description="a neas ensemble built from the model arguments arch and space"),
    }
)


@register_model
def neas_s(pretrained: bool = False, **kwargs):
    """NEAS-S (301.5M MACs, 8.66M params at 224 px): the released small ensemble."""
    from neas.ensemble.timm_model import create

    return create("neas_s", pretrained, released=RELEASED["neas_s"], **kwargs)


@register_model
def neas_m(pretrained: bool = False, **kwargs):
    """NEAS-M (449.4M MACs, 11.55M params at 224 px): the released medium ensemble."""
    from neas.ensemble.timm_model import create

    return create("neas_m", pretrained, released=RELEASED["neas_m"], **kwargs)


@register_model
def neas_l(pretrained: bool = False, **kwargs):
    """NEAS-L (553.1M MACs, 12.44M params at 224 px): the released large ensemble."""
    from neas.ensemble.timm_model import create

    return create("neas_l", pretrained, released=RELEASED["neas_l"], **kwargs)


@register_model
def neas_ensemble(pretrained: bool = False, **kwargs):
    """Any neas ensemble: ``arch`` and ``space`` model arguments (required)."""
    from neas.ensemble.timm_model import create

    return create("neas_ensemble", pretrained, **kwargs)
