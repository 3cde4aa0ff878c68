# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Instance segmentation metrics: one sparse overlap per image pair, every metric derived from it.

Quick use::

    from monai_ext.metrics import compute_overlap, aji, panoptic_quality, instance_metrics, aggregate_metrics

    ov = compute_overlap(gt, pred)               # once per pair
    aji(ov), panoptic_quality(ov)                # (pq, dq, sq)
    instance_metrics(gt, pred, ["aji", "pq", "ap50"])
    aggregate_metrics([(gt1, pred1), (gt2, pred2)], mode="pooled")
    ranked_map([(gt, pred, scores)])             # CKS mAP 0.50:0.95 with prediction scores

Definitions, conventions (strict ``IoU > 0.5`` for PQ, ``>=`` for DSB AP, empty images, ignore labels,
dtypes) and aggregation modes are documented in :mod:`.overlap`, :mod:`.instance` and :mod:`.ranked`;
MONAI / Ignite wrappers are in :mod:`.wrappers`.
"""

from __future__ import annotations

from .instance import (
    DEFAULT_METRICS,
    METRIC_NAMES,
    InstanceMetricSpec,
    InstanceStats,
    adapted_rand_error,
    aggregate_metrics,
    aji,
    aji_breakdown,
    aji_plus,
    ap_key,
    dice2,
    dsb_ap,
    foreground_dice,
    foreground_iou,
    instance_dice,
    instance_metrics,
    instance_statistics,
    panoptic_quality,
    sbd,
)
from .overlap import (
    InstanceOverlap,
    as_label_array,
    compute_overlap,
    max_cardinality_matching_size,
    max_iou_matching,
    touching_instances,
)
from .ranked import (
    COCO_THRESHOLDS,
    RankedAP,
    area_weighted_instance_dice,
    ranked_average_precision,
    ranked_indicators,
    ranked_map,
    scores_for,
)
from .wrappers import InstanceSegMetric, InstanceSegMetricHandler

__all__ = [
    "COCO_THRESHOLDS",
    "DEFAULT_METRICS",
    "METRIC_NAMES",
    "InstanceMetricSpec",
    "InstanceOverlap",
    "InstanceSegMetric",
    "InstanceSegMetricHandler",
    "InstanceStats",
    "RankedAP",
    "adapted_rand_error",
    "aggregate_metrics",
    "aji",
    "aji_breakdown",
    "aji_plus",
    "ap_key",
    "area_weighted_instance_dice",
    "as_label_array",
    "compute_overlap",
    "dice2",
    "dsb_ap",
    "foreground_dice",
    "foreground_iou",
    "instance_dice",
    "instance_metrics",
    "instance_statistics",
    "max_cardinality_matching_size",
    "max_iou_matching",
    "panoptic_quality",
    "ranked_average_precision",
    "ranked_indicators",
    "ranked_map",
    "sbd",
    "scores_for",
    "touching_instances",
]
