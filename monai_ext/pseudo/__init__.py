# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Pseudo-label machinery: storage per round, refiners, confidence scoring, instance-aware selection."""

from __future__ import annotations

from monai_ext.utils import lazy_exports

from .store import PseudoLabelStore

__all__ = ["PseudoLabelStore"]


# -- lazy re-exports: every public name of the submodules, imported on first use (keeps `import monai_ext`
# light and free of import cycles between subpackages).
_LAZY: dict[str, tuple[str, ...]] = {  # submodule: its public names
    "features": (
        "FeatureMap", "FeatureExtractor", "FilterBankExtractor", "ViTExtractor", "iter_feature_tiles",
        "get_extractor", "EXTRACTORS",
    ),
    "ipl": (
        "IPLResult", "background_mask", "component_scores", "pseudo_points_from_peaks", "select_instances",
        "point_targets", "supervised_targets", "merge_stats",
    ),
    "propagation": (
        "CentroidAccumulator", "cosine_similarity_map", "minmax", "ot_push", "dense_crf", "crf_available",
        "PixelPropagation",
    ),
    "refiners": (
        "auto_window", "batched_otsu", "mosaic", "unmosaic", "ClassicalRefiner", "SAMRefiner", "SAM_BUILDERS",
        "register_sam_builder", "build_sam", "get_refiner",
    ),
    "scoring": (
        "RefinedMasks", "instance_ids", "instance_centroids", "window_origins", "gather_windows", "paste_windows",
        "consistency_scores", "adaptive_threshold", "build_pseudo_labels", "merge_with_previous", "score_statistics",
    ),
    "seeds": ("StainWatershedSeeds", "FolderSeeds", "decode_instance_png", "get_seeds", "SEED_SOURCES"),
}
__all__ = [*__all__, *(n for names in _LAZY.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
