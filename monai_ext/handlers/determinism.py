# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Per-epoch reseeding so a resumed run replays exactly what an uninterrupted run would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.data.utils import set_rnd

from monai_ext.utils import set_seed

from ._ignite import Engine, Events

__all__ = ["EpochSeeder"]


class EpochSeeder:
    """Seed python, numpy, torch and the datasets' random transforms from ``(seed, epoch)`` each epoch.

    Random augmentation and shuffling then depend only on the epoch number, not on how many epochs
    ran in this process, so resuming after a crash reproduces the uninterrupted run.

    Args:
        seed: base seed (``None`` disables the handler).
        datasets: datasets (or data loaders) whose MONAI random transforms are reseeded.
    """

    def __init__(self, seed: int | None, datasets: Sequence[Any] | Any = ()) -> None:
        self.seed = seed
        if not isinstance(datasets, (list, tuple)):
            datasets = [datasets]
        self.datasets = list(datasets)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.seed is None:
            return
        epoch_seed = (int(self.seed) * 1_000_003 + int(engine.state.epoch)) % (2**31 - 1)
        set_seed(epoch_seed)
        for i, ds in enumerate(self.datasets):
            ds = getattr(ds, "dataset", ds)
            set_rnd(ds, (epoch_seed + 7919 * (i + 1)) % (2**31 - 1))
