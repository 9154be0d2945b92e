"""Named presets: the search spaces and the three released NEAS ensembles (docs/DESIGN.md §2-3)."""

from __future__ import annotations

__all__ = ["ARCH_PAPER_RESULTS", "ARCH_PRESETS", "SPACE_PRESETS", "TIMM_NAMES"]

_PAPER_OPS = ["k3e4", "k3e6", "k5e4", "k5e6", "k7e4", "k7e6", "skip"]
_PAPER_STAGES = [
    {"channels": 24, "layers": 4, "stride": 2},
    {"channels": 40, "layers": 4, "stride": 2},
    {"channels": 80, "layers": 4, "stride": 2},
    {"channels": 112, "layers": 4, "stride": 1},
    {"channels": 160, "layers": 4, "stride": 2},
]

SPACE_PRESETS: dict[str, dict] = {
    # The paper's ImageNet space, with the strides that reproduce the released models' FLOPs.
    "imagenet": {
        "input_size": 224,
        "stem_channels": 16,
        "stem_stride": 2,
        "first_block_channels": 16,
        "stages": _PAPER_STAGES,
        "ops": _PAPER_OPS,
        "split": [9, 20],
        "num_paths": 2,
        "head_channels": 960,
        "feature_channels": 1280,
    },
    # The same structure for 32x32 images: stem and first stage at stride 1, so the last
    # stage runs at 4x4; half width keeps a CIFAR supernet trainable on one GPU in hours.
    "cifar": {
        "input_size": 32,
        "stem_channels": 16,
        "stem_stride": 1,
        "first_block_channels": 16,
        "stages": [dict(s, stride=1) if i == 0 else s for i, s in enumerate(_PAPER_STAGES)],
        "ops": _PAPER_OPS,
        "split": [9, 20],
        "num_paths": 2,
        "head_channels": 960,
        "feature_channels": 1280,
        "width_mult": 0.5,
    },
    # A few narrow layers: for tests, the digits demo and laptops.
    "tiny": {
        "input_size": 32,
        "stem_channels": 8,
        "stem_stride": 2,
        "first_block_channels": 8,
        "stages": [
            {"channels": 16, "layers": 2, "stride": 2},
            {"channels": 24, "layers": 2, "stride": 2},
        ],
        "ops": ["k3e3", "k3e6", "k5e3", "k5e6", "skip"],
        "split": [1, 4],
        "num_paths": 2,
        "head_channels": 64,
        "feature_channels": 128,
        "dropout": 0.1,
    },
}

# The released models as official flat arch lists (docs/DESIGN.md §3), all in the imagenet space.
ARCH_PRESETS: dict[str, list[int]] = {
    "neas-s": [20, 2, 0, 0, -1, 0, 2, 0, 0, 2, -1, 0, -1, 0, 3, 2, 4, 0, 2, 5, 0, 4, 3, 0, 0],
    "neas-m": [16, 2, 0, 3, 2, 0, 2, 5, 0, -1, 3, 0, 2, 0, 0, 3, 5, 4, 0, 5, 0, 5, 4, 0, 3, 5, 2, 5, 0],
    "neas-l": [16, 2, 0, 5, 5, 1, 3, 5, 1, 3, 4, 1, 2, 5, 4, 1, 3, 3, 1, 3, 1, 5, 1, 0, 5, 4, 4, 3, 0],
}

# What the paper's Table 1 reports for them (paper-convention FLOPs, ImageNet top-1 %).
ARCH_PAPER_RESULTS: dict[str, dict] = {
    "neas-s": {"paper_flops": 314_000_000, "top1": 77.9, "top5": 93.9},
    "neas-m": {"paper_flops": 472_000_000, "top1": 79.5, "top5": 94.6},
    "neas-l": {"paper_flops": 574_000_000, "top1": 80.0, "top5": 94.8},
}

# Their names in timm's registry (neas.ensemble.timm_registry), in the imagenet space.
TIMM_NAMES: dict[str, str] = {"neas_s": "neas-s", "neas_m": "neas-m", "neas_l": "neas-l"}
