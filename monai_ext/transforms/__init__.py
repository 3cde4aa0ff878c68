# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""MONAI dictionary transforms of the weak-label methods."""

from __future__ import annotations

from monai_ext.utils import lazy_exports

from .io import SaveInstancesD, SaveInstancesd, SaveInstancesDict, prediction_path, read_prediction, sample_id_of
from .pseudo import LoadPseudoLabelD, LoadPseudoLabeld, LoadPseudoLabelDict

__all__ = [
    "SaveInstancesd",
    "SaveInstancesD",
    "SaveInstancesDict",
    "prediction_path",
    "read_prediction",
    "sample_id_of",
   "LoadPseudoLabeld", "LoadPseudoLabelD", "LoadPseudoLabelDict"]


# -- lazy re-exports: every public name of the submodules, imported on first use (keeps `import monai_ext`
# light and free of import cycles between subpackages).
_LAZY: dict[str, tuple[str, ...]] = {  # submodule: its public names
    "coin": (
        "IGNORE_INDEX", "COIN_WATERSHED", "rgb_to_hed", "hed_to_rgb", "hematoxylin", "instance_edges",
        "instances_to_targets", "instance_confidence", "HEDChanneld", "RandHEDJitterd", "PseudoTargetsd",
        "InstanceTargetsd", "COINInstancesd",
    ),
    "em": (
        "kernel_sum", "points_to_heatmap", "point_zone", "instance_centres", "instance_targets", "PointsToHeatmapd",
        "InstanceTargetsEMd", "RandSliced",
    ),
    "points": (
        "label_centroids", "detect_nuclei_points", "PointsFromLabeld", "PointsFromNucleid", "PadPointsd",
        "RandPointCropd", "RandPointFlipRotated", "RandPointZoomd", "RandPointJitterd", "RandPointDropd",
        "SizePriord", "SelectMetad",
    ),
    "spoco": (
        "spoco_reader", "sample_instances", "SparseInstancesd", "SparseInstancesD", "SparseInstancesDict",
        "RandPhotometricd", "RandPhotometricD", "RandPhotometricDict", "SpocoViewsd", "SpocoViewsD", "SpocoViewsDict",
    ),
}
__all__ = [*__all__, *(n for names in _LAZY.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
