# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""monai_ext.postprocess."""

from __future__ import annotations

from monai_ext.utils import lazy_exports

__all__: list[str] = []


# -- lazy re-exports: every public name of the submodules, imported on first use (keeps `import monai_ext`
# light and free of import cycles between subpackages).
_LAZY: dict[str, tuple[str, ...]] = {  # submodule: its public names
    "centers": (
        "local_peaks", "connected_instances", "centre_markers", "centre_watershed", "instance_scores", "link_slices",
        "instances_from_maps", "EMInstancesd",
    ),
    "clustering": (
        "cluster_embeddings", "nearest_centre", "consistency_filter", "mean_shift", "SpocoClusterd", "SpocoClusterD",
        "SpocoClusterDict", "METHODS",
    ),
    "points": (
        "distance_nms", "crop_flat_index", "paste_crops", "gather_crops", "paint_instances", "remove_small_instances",
        "merge_tiles", "TiledInstanceInferer", "InstancesFromPredd", "InstancesFromPredD", "InstancesFromPredDict",
    ),
    "watershed": (
        "distance_watershed", "marker_watershed", "resolve_edge_threshold", "relabel_sequential", "fill_instance_holes", "instance_areas",
        "footprint", "label_peaks", "seed_orphans", "binary_fill_holes",
    ),
}
__all__ = [*__all__, *(n for names in _LAZY.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
