# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Trainers where one model and one loss are not enough."""

from __future__ import annotations

from monai_ext.utils import lazy_exports

from .base import GuardedTrainer, batch_ids

__all__ = ["GuardedTrainer", "batch_ids"]


# -- lazy re-exports: every public name of the submodules, imported on first use (keeps `import monai_ext`
# light and free of import cycles between subpackages).
_LAZY: dict[str, tuple[str, ...]] = {  # submodule: its public names
    "cks": ("CKSTrainer", "cks_step_losses", "train_val_records", "CKSLossTermsLogger"),
    "coin": ("EMATeacher", "COINTrainer", "COINInferer", "COINPseudoLabelBuilder", "tta_probabilities"),
    "em": (
        "MODES", "STAGES", "DEFAULT_LOSS_WEIGHTS", "WDASchedule", "SourceTargetDataset", "tta_maps", "EMInferer",
        "IPLBuilder", "WDATrainer", "source_records", "target_records", "labelled_records",
    ),
    "spoco": ("SpocoTrainer", "SpocoInferer", "load_teacher"),
}
__all__ = [*__all__, *(n for names in _LAZY.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
