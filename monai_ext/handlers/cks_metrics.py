# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""The CKS paper's evaluation as an Ignite metric: ranked AP50 / AP75 / mAP, area-weighted instance Dice and
DSB-style AP, overall and per cell line / class.

Definitions come from :mod:`monai_ext.metrics` (ranked AP: per image, predictions by decreasing score greedily
take the free ground-truth cell of highest IoU if ``IoU > t`` (strict), indicators pooled over all images,
``AP = sum_k T_k P_k / C`` without precision smoothing; Dice: areas pooled, predictions with score >= 0.5; DSB AP:
``TP / (TP + FP + FN)`` at ``IoU >= 0.5``, mean over images). Predictions are label maps with a score per id
(``{id: score}``, what :class:`~monai_ext.postprocess.points.InstancesFromPredd` produces).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from monai_ext.metrics import COCO_THRESHOLDS, RankedAP, area_weighted_instance_dice, compute_overlap, dsb_ap
from monai_ext.utils import to_numpy

try:  # Ignite is a hard dependency of the bundles; keep the import local to this module
    from ignite.metrics import Metric
except ImportError:  # pragma: no cover
    Metric = object  # type: ignore[assignment,misc]

__all__ = ["CKSMetrics", "cks_metrics"]


def _label_of(x: Any) -> np.ndarray:
    arr = to_numpy(x)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    return arr.astype(np.int64)


def cks_metrics(items: Sequence[tuple[Any, Any, Mapping[int, float], str]], min_score: float | None = None,
                dice_min_score: float | None = 0.5, groups: bool = True) -> dict[str, float]:
    """The CKS table of a list of ``(gt, pred, scores, group)``.

    Returns:
        ``{"ap50", "ap75", "map", "dice", "dsb_ap50", "n_images", "n_gt"}`` and, when ``groups`` and more than one
        group (or a named group) occurs, the same keys suffixed ``/<group>``.
    """
    by_group: dict[str, list[tuple[Any, Mapping[int, float]]]] = defaultdict(list)
    all_items = []
    for gt, pred, scores, group in items:
        ov = compute_overlap(_label_of(gt), _label_of(pred))
        all_items.append((ov, scores))
        by_group[str(group or "")].append((ov, scores))

    def table(entries: list[tuple[Any, Mapping[int, float]]]) -> dict[str, float]:
        acc = RankedAP(COCO_THRESHOLDS, strict=True, min_score=min_score)
        for ov, sc in entries:
            acc.update(ov, scores=sc)
        ap = acc.compute()
        dice = area_weighted_instance_dice(entries, min_score=dice_min_score)
        dsb = float(np.mean([dsb_ap(ov, thresholds=0.5) for ov, _ in entries])) if entries else float("nan")
        return {"ap50": float(ap[0]), "ap75": float(ap[COCO_THRESHOLDS.index(0.75)]), "map": float(np.mean(ap)),
                "dice": float(dice), "dsb_ap50": dsb, "n_images": float(len(entries)), "n_gt": float(acc.n_gt)}

    out = table(all_items)
    if groups and (len(by_group) > 1 or (len(by_group) == 1 and "" not in by_group)):
        for g, entries in sorted(by_group.items()):
            for k, v in table(entries).items():
                out[f"{k}/{g or 'unknown'}"] = v
    return out


class CKSMetrics(Metric):  # type: ignore[misc]
    """Ignite metric of the CKS table (see :func:`cks_metrics`).

    ``engine.state.output`` is the decollated list of sample dicts after post-processing; each holds the predicted
    label map (``pred_key``), the ground truth (``label_key``), the scores (``scores_key``) and optionally a group
    name (``group_key``, e.g. the cell line).

    Args:
        output: ``"all"`` (a dict: every key lands in ``engine.state.metrics``) or one key (e.g. ``"ap50"``; a scalar,
            usable as ``key_val_metric``).
        min_score: predictions below this score are ignored by the ranked AP (CKS: 0.2; ``None``: all).
        dice_min_score: score threshold of the Dice (CKS: 0.5).
    """

    def __init__(self, output: str = "all", output_transform: Callable = lambda x: x, pred_key: str = "pred",
                 label_key: str = "label", scores_key: str = "scores", group_key: str = "group",
                 min_score: float | None = None, dice_min_score: float | None = 0.5, groups: bool = True) -> None:
        self.output = output
        self.pred_key, self.label_key, self.scores_key, self.group_key = pred_key, label_key, scores_key, group_key
        self.min_score, self.dice_min_score, self.groups = min_score, dice_min_score, groups
        self._items: list[tuple[Any, Any, Mapping[int, float], str]] = []
        super().__init__(output_transform=output_transform,
                         metrics_result_mode="flatten" if output == "all" else "both")

    def reset(self) -> None:
        self._items = []

    def update(self, output: Any) -> None:
        samples = output if isinstance(output, (list, tuple)) else [output]
        for s in samples:
            if not isinstance(s, Mapping) or self.pred_key not in s or self.label_key not in s:
                raise ValueError(f"CKSMetrics needs dicts with {self.pred_key!r} and {self.label_key!r} per sample")
            scores = s.get(self.scores_key) or {}
            group = s.get(self.group_key, "")
            self._items.append((_label_of(s[self.label_key]), _label_of(s[self.pred_key]), dict(scores), str(group)))

    def compute(self) -> Any:
        res = cks_metrics(self._items, self.min_score, self.dice_min_score, self.groups)
        if self.output == "all":
            return res
        if self.output not in res:
            raise KeyError(f"unknown CKS metric {self.output!r}; available: {sorted(res)}")
        return res[self.output]

    def iteration_completed(self, engine: Any) -> None:
        """Feed the (decollated) engine output to :meth:`update` without Ignite's ``(y_pred, y)`` unpacking."""
        self.update(self._output_transform(engine.state.output))
