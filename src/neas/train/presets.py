"""Retraining recipe presets (docs/DESIGN.md §9): the released models' ImageNet recipe, and one
for small data (CIFAR-size images, digits) that finishes in minutes on a CPU."""

from __future__ import annotations

__all__ = ["RETRAIN_PRESETS"]

RETRAIN_PRESETS: dict[str, dict] = {
    # The released models: RMSpropTF(decay .9, momentum .9, eps 1e-3), lr 0.064 per 2048
    # images, wd 1e-5 (not biases/BN), cosine with warm-up, label smoothing 0.1, dropout 0.2,
    # RandAugment rand-m9-mstd0.5, random erasing 0.2, EMA 0.9999.
    "imagenet": {
        "epochs": 350,
        "batch_size": 128,
        "lr_per_2048": 0.064,
        "warmup_epochs": 3,
        "weight_decay": 1e-5,
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "randaugment": "rand-m9-mstd0.5",
        "erase_prob": 0.2,
        "ema_decay": 0.9999,
    },
    # Same parts, scaled for a few hundred steps: a larger learning rate per image, a short
    # warm-up and an EMA that forgets within an epoch or two.
    "small": {
        "epochs": 30,
        "batch_size": 64,
        "lr_per_2048": 0.5,
        "warmup_epochs": 1,
        "weight_decay": 1e-5,
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "randaugment": "rand-m9-mstd0.5",
        "erase_prob": 0.2,
        "ema_decay": 0.998,
    },
}
