# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""monai_ext.losses."""

from __future__ import annotations

from monai_ext.utils import lazy_exports

__all__: list[str] = []


# -- lazy re-exports: every public name of the submodules, imported on first use (keeps `import monai_ext`
# light and free of import cycles between subpackages).
_LAZY: dict[str, tuple[str, ...]] = {  # submodule: its public names
    "cks": (
        "gaussian_prior", "principal_foreground_logit", "consistency_loss_m", "instance_consistency_loss",
        "border_map", "border_loss", "collapse_loss", "supervised_mask_loss", "CKSLoss",
    ),
    "contrastive": ("PrototypeMemory", "ClassFocusedContrastiveLoss", "masked_mean", "kmeans", "sample_anchors"),
    "detection": ("PointDetectionLoss", "detection_targets"),
    "em": ("IgnoreCrossEntropyLoss", "WeightedHeatmapLoss"),
    "seg_edge": ("ForegroundDiceLoss", "SegEdgeLoss"),
    "spoco": ("SpocoLoss", "DiscriminativeLoss", "kernel_sigma2", "gaussian_kernel", "instance_means", "TERM_NAMES"),
    "spoco_wgan": ("ShapeCritic", "WGANShapeLoss"),
}
__all__ = [*__all__, *(n for names in _LAZY.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
