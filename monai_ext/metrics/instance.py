# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Instance segmentation metrics derived from one :class:`InstanceOverlap`, per image and pooled.

Notation: GT instances ``G_i`` (``N`` of them), predicted instances ``S_j`` (``M``), ``I_ij = |G_i n S_j|``,
``U_ij = |G_i u S_j|``, ``IoU_ij = I_ij / U_ij``.  Only overlapping pairs (``I_ij > 0``) are ever touched.

Definitions (the docstring of each function repeats its own):

- ``aji`` (MoNuSeg, Kumar et al. 2017; HoVer-Net ``get_fast_aji``): each GT takes the prediction with the
  highest IoU (ties: lowest prediction id; predictions may be reused); ``C = sum I``, ``U = sum U`` over those
  pairs, plus the area of every GT without overlap and of every prediction never taken.  ``AJI = C / U``.
- ``aji_plus`` (HoVer-Net ``get_fast_aji_plus``): same but the pairs are a one-to-one matching maximising the
  summed IoU (Hungarian), unmatched GT and predictions add their areas to ``U``.
- ``pq``, ``dq``, ``sq`` (Kirillov et al.; HoVer-Net ``get_fast_pq``, MONAI ``compute_panoptic_quality``):
  pairs with ``IoU > match_iou`` (**strict**, default 0.5, unique matches); below 0.5 the Hungarian max-IoU
  matching is filtered by ``IoU > match_iou`` as HoVer-Net/MONAI do.  ``DQ = TP / (TP + FP/2 + FN/2)``,
  ``SQ = sum IoU / TP`` (0 when ``TP = 0``), ``PQ = DQ * SQ``.  No ``1e-6`` smoothing (exact ratios).
- ``ap<t>`` (DSB 2018 as in cellpose ``average_precision`` and StarDist ``accuracy``):
  ``TP / (TP + FP + FN)`` at threshold ``t`` with a maximum one-to-one matching among pairs with
  ``IoU >= t`` (default, as cellpose/StarDist) or ``IoU > t`` (``ap_strict=True``, as the Kaggle text).
  Not COCO AP: for ranked AP with scores see :mod:`monai_ext.metrics.ranked`.
- ``sbd`` (CVPPP; elf ``symmetric_best_dice_score``): ``BD(A, B) = mean_a max_b Dice(a, b)``,
  ``SBD = min(BD(G, S), BD(S, G))``.
- ``are`` adapted Rand error (``skimage.metrics.adapted_rand_error``, alpha 0.5): pixel-pair counting on the
  contingency table restricted to GT foreground; predicted background counts as one segment;
  ``ARE = 1 - sum(p_ij^2 - p_ij) / (0.5 sum(a_i^2 - a_i) + 0.5 sum(b_j^2 - b_j))``.
- ``fg_dice``, ``fg_iou``: binary foreground (``label > 0``) Dice and IoU, no smoothing.  ``miou``: mean of
  the background and foreground IoU over the classes present (COIN's reported "IoU").
- ``dice2`` (HoVer-Net ``get_fast_dice_2``): ``2 sum I_ij / sum (|G_i| + |S_j|)`` over all overlapping pairs.
- ``instance_dice`` (CKS / LACSS ``Dice``): each prediction's Dice with the GT of largest *intersection*
  (0 if none), area-weighted over predictions, and the same from the GT side; the mean of the two.
- ``aji_adjacent``, ``aji_non_adjacent`` (COIN supplement Tab. 13): AJI restricted to the GT instances that
  touch another GT instance (full connectivity by default) and to the others.  Each GT contributes its AJI
  ``C`` and ``U`` terms to its group; each prediction no GT took goes to the group of the GT it intersects
  most (ties: lowest GT id), or to the non-adjacent group if it meets no GT.  So the two groups partition
  ``C`` and ``U`` of the plain AJI exactly.

Empty images (one convention for every metric):

- GT and prediction both without instances: ``empty_value`` (default ``1.0``: a correct empty answer is
  perfect; ``nan`` excludes such images from per-image means, ``0.0`` mimics MONAI/StarDist).  For ``are``,
  an error, the value is ``1 - empty_value``.
- exactly one side empty: the worst value (0, and 1 for ``are``).  For ``are`` this departs from
  scikit-image, which counts predicted background as one segment (a single GT object vs an empty
  prediction gives 0 there).
- ``aji_adjacent`` / ``aji_non_adjacent``: ``nan`` when the group is empty (no GT and no prediction in it),
  so per-image means skip images without e.g. touching nuclei; this ignores ``empty_value`` on purpose.

Aggregation over a dataset (:func:`aggregate_metrics`):

- ``"per_image"``: the mean of the per-image values (``nan`` skipped), as HoVer-Net ``compute_stats.py``,
  COIN ``evaluate.py`` and cellpose do.
- ``"pooled"``: per-image sufficient statistics (counts and sums, see :class:`InstanceMetricSpec`) are summed
  and the metric is computed once, as StarDist ``matching_dataset(by_image=False)``, MONAI ``MEAN_BATCH`` PQ and
  the CKS paper do.  Pooled AJI is ``sum C / sum U``; pooled SBD is ``min`` of the two pooled best-Dice means;
  pooled ARE sums the pair counts (images as independent segments).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_ext.errors import DataError

from .overlap import InstanceOverlap, compute_overlap, max_cardinality_matching_size, max_iou_matching

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_NAMES",
    "InstanceMetricSpec",
    "InstanceStats",
    "aji",
    "aji_plus",
    "aji_breakdown",
    "panoptic_quality",
    "dsb_ap",
    "sbd",
    "adapted_rand_error",
    "foreground_dice",
    "foreground_iou",
    "dice2",
    "instance_dice",
    "instance_metrics",
    "instance_statistics",
    "aggregate_metrics",
    "ap_key",
]

#: metrics computed by :func:`instance_metrics` when ``metrics=None`` ("dsb_ap" expands to ``ap50`` ...).
DEFAULT_METRICS: tuple[str, ...] = (
    "aji", "aji_plus", "pq", "dq", "sq", "dsb_ap", "sbd", "are", "fg_dice", "fg_iou", "dice2", "instance_dice",
)

# output key -> family of sufficient statistics
_FAMILY = {
    "aji": "aji",
    "aji_plus": "aji_plus",
    "pq": "pq",
    "dq": "pq",
    "sq": "pq",
    "sbd": "sbd",
    "are": "are",
    "fg_dice": "fg",
    "fg_iou": "fg",
    "miou": "fg",
    "dice2": "dice2",
    "instance_dice": "instance_dice",
    "aji_adjacent": "aji_groups",
    "aji_non_adjacent": "aji_groups",
    "dsb_map": "dsb",
}
_ALIASES = {"adapted_rand_error": "are", "aji+": "aji_plus", "panoptic_quality": "pq"}
_FIXED_SIZE = {"aji": 2, "aji_plus": 2, "pq": 4, "sbd": 4, "are": 5, "fg": 4, "dice2": 4, "instance_dice": 4,
               "aji_groups": 4}

#: every accepted metric name besides ``ap<t>`` (e.g. ``ap50``, ``ap75``, ``ap52.5``).
METRIC_NAMES: tuple[str, ...] = tuple(_FAMILY) + ("dsb_ap",) + tuple(_ALIASES)

_DEFAULT_AP_THRESHOLDS = (0.5, 0.75, 0.9)


def ap_key(threshold: float) -> str:
    """Output name of the DSB AP at ``threshold``: ``0.5 -> "ap50"``, ``0.75 -> "ap75"``, ``0.525 -> "ap52.5"``."""
    return f"ap{100.0 * threshold:g}"


def _parse_ap(name: str) -> float | None:
    if not name.startswith("ap") or len(name) < 3:
        return None
    try:
        t = round(float(name[2:]) / 100.0, 10)
    except ValueError:
        return None
    if not 0.0 < t <= 1.0:
        raise ValueError(f"metric {name!r}: AP threshold must be in (0, 100], got {name[2:]}")
    return t


def _check_threshold(t: float, what: str) -> float:
    """Validate an IoU threshold; rounded to 10 decimals so ``np.arange`` artefacts (0.6000000000000001)
    do not move an exact ratio such as ``IoU = 3/5`` to the wrong side."""
    t = float(t)
    if not (0.0 < t <= 1.0) or math.isnan(t):
        raise ValueError(f"{what} must be in (0, 1], got {t}")
    return round(t, 10)


class InstanceMetricSpec:
    """Which metrics to compute, their conventions, and the layout of their sufficient statistics.

    The statistics of one image are a flat float64 vector (``size`` entries); summing vectors over images
    and calling :meth:`finalize` gives pooled values, finalising each vector gives per-image values.

    Args:
        metrics: metric names (see :data:`METRIC_NAMES`, plus ``ap<t>``); ``None`` = :data:`DEFAULT_METRICS`.
            ``"dsb_ap"`` expands to one ``ap<t>`` per ``ap_thresholds``; ``"dsb_map"`` is their mean.
        match_iou: PQ matching threshold (``IoU > match_iou``).
        ap_thresholds: thresholds of ``"dsb_ap"`` / ``"dsb_map"``.
        ap_strict: DSB AP matches at ``IoU > t`` instead of ``IoU >= t``.
        empty_value: value when GT and prediction are both empty (see the module docstring).
    """

    def __init__(
        self,
        metrics: str | Sequence[str] | None = None,
        *,
        match_iou: float = 0.5,
        ap_thresholds: float | Sequence[float] = _DEFAULT_AP_THRESHOLDS,
        ap_strict: bool = False,
        empty_value: float = 1.0,
    ) -> None:
        names = list(DEFAULT_METRICS) if metrics is None else [metrics] if isinstance(metrics, str) else list(metrics)
        if not names:
            raise ValueError("metrics: give at least one metric name")
        self.match_iou = _check_threshold(match_iou, "match_iou")
        ap_thr = [ap_thresholds] if np.isscalar(ap_thresholds) else list(ap_thresholds)  # type: ignore[list-item]
        self.ap_thresholds = tuple(_check_threshold(t, "ap_thresholds") for t in ap_thr)
        self.ap_strict = bool(ap_strict)
        self.empty_value = float(empty_value)
        keys: list[str] = []
        dsb: list[float] = []
        for raw in names:
            name = _ALIASES.get(str(raw).lower(), str(raw).lower())
            if name == "dsb_ap":
                if not self.ap_thresholds:
                    raise ValueError("'dsb_ap' needs at least one ap_threshold")
                new = [ap_key(t) for t in self.ap_thresholds]
                dsb += list(self.ap_thresholds)
            elif name == "dsb_map":
                if not self.ap_thresholds:
                    raise ValueError("'dsb_map' needs at least one ap_threshold")
                new = [name]
                dsb += list(self.ap_thresholds)
            elif name in _FAMILY:
                new = [name]
            else:
                t = _parse_ap(name)
                if t is None:
                    raise ValueError(
                        f"unknown metric {raw!r}; choose from {', '.join(METRIC_NAMES)} or 'ap<t>' (e.g. 'ap50')"
                    )
                new = [ap_key(t)]
                dsb.append(t)
            keys += [k for k in new if k not in keys]
        self.keys: tuple[str, ...] = tuple(keys)
        self.dsb_thresholds: tuple[float, ...] = tuple(sorted(set(dsb)))
        families = []
        for k in self.keys:
            fam = _FAMILY.get(k, "dsb")
            if fam not in families:
                families.append(fam)
        self.families: tuple[str, ...] = tuple(families)
        self._slices: dict[str, slice] = {}
        start = 0
        for fam in self.families:
            n = 3 * len(self.dsb_thresholds) if fam == "dsb" else _FIXED_SIZE[fam]
            self._slices[fam] = slice(start, start + n)
            start += n
        self.size = start

    @property
    def needs_adjacency(self) -> bool:
        """Whether the overlap must carry ``gt_adjacent`` (``aji_adjacent`` / ``aji_non_adjacent``)."""
        return "aji_groups" in self.families

    def signature(self) -> tuple:
        """Hashable description; specs with equal signatures produce compatible statistics."""
        return (self.keys, self.match_iou, self.dsb_thresholds, self.ap_thresholds, self.ap_strict)

    def statistics(self, ov: InstanceOverlap) -> np.ndarray:
        """Sufficient statistics ``(size,)`` of one image."""
        out = np.zeros(self.size)
        for fam in self.families:
            out[self._slices[fam]] = _STATS[fam](self, ov)
        return out

    def finalize(self, stats: np.ndarray) -> np.ndarray:
        """Metric values ``(..., len(keys))`` from statistics ``(..., size)`` (one image or summed)."""
        stats = np.asarray(stats, dtype=np.float64)
        if stats.shape[-1] != self.size:
            raise ValueError(f"statistics have {stats.shape[-1]} entries, this spec expects {self.size}")
        values: dict[str, np.ndarray] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for fam in self.families:
                values.update(_FINAL[fam](self, stats[..., self._slices[fam]]))
        return np.stack([np.asarray(values[k], dtype=np.float64) for k in self.keys], axis=-1)

    def as_dict(self, values: np.ndarray) -> dict[str, float]:
        """``{key: float}`` from one row of :meth:`finalize`."""
        return {k: float(v) for k, v in zip(self.keys, np.asarray(values).reshape(-1))}


@dataclass(frozen=True, eq=False)
class InstanceStats:
    """Sufficient statistics of one image (or a sum of images) under a given :class:`InstanceMetricSpec`."""

    spec: InstanceMetricSpec
    data: np.ndarray

    def __add__(self, other: InstanceStats) -> InstanceStats:
        if not isinstance(other, InstanceStats):
            return NotImplemented
        if other.spec.signature() != self.spec.signature():
            raise ValueError("cannot add statistics computed with different metric specs")
        return InstanceStats(self.spec, self.data + other.data)

    def values(self) -> dict[str, float]:
        """Metric values of these statistics."""
        return self.spec.as_dict(self.spec.finalize(self.data))


# ----------------------------------------------------------------------------------------------------------
# sufficient statistics per family
# ----------------------------------------------------------------------------------------------------------


def _first_per_group(group: np.ndarray, desc: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Index of the entry with the largest ``desc`` in each ``group`` (ties: smallest ``tie``)."""
    if group.size == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((tie, -desc, group))
    g = group[order]
    return order[np.r_[True, g[1:] != g[:-1]]]


def _aji_terms(ov: InstanceOverlap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-GT AJI numerator/denominator terms and the mask of predictions taken by some GT."""
    best = _first_per_group(ov.pair_gt, ov.pair_iou, ov.pair_pred)
    c_gt = np.zeros(ov.n_gt)
    u_gt = ov.gt_areas.astype(np.float64)  # GT without overlap: its own area
    c_gt[ov.pair_gt[best]] = ov.pair_inter[best]
    u_gt[ov.pair_gt[best]] = ov.pair_union[best]
    used = np.zeros(ov.n_pred, dtype=bool)
    used[ov.pair_pred[best]] = True
    return c_gt, u_gt, used


def _stats_aji(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    c_gt, u_gt, used = _aji_terms(ov)
    return [c_gt.sum(), u_gt.sum() + ov.pred_areas[~used].sum()]


def _stats_aji_groups(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    if ov.gt_adjacent is None:
        raise ValueError("aji_adjacent / aji_non_adjacent need compute_overlap(..., adjacency=True)")
    c_gt, u_gt, used = _aji_terms(ov)
    adj = ov.gt_adjacent
    # unused predictions join the group of the GT they intersect most; no GT -> non-adjacent
    best_gt = _first_per_group(ov.pair_pred, ov.pair_inter.astype(np.float64), ov.pair_gt)
    pred_adj = np.zeros(ov.n_pred, dtype=bool)
    pred_adj[ov.pair_pred[best_gt]] = adj[ov.pair_gt[best_gt]]
    spare = ov.pred_areas * ~used
    return [
        c_gt[adj].sum(), u_gt[adj].sum() + spare[pred_adj].sum(),
        c_gt[~adj].sum(), u_gt[~adj].sum() + spare[~pred_adj].sum(),
    ]


def _stats_aji_plus(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    sel = max_iou_matching(ov)
    c = ov.pair_inter[sel].sum()
    u = ov.pair_union[sel].sum()
    u += ov.gt_areas.sum() - ov.gt_areas[ov.pair_gt[sel]].sum()
    u += ov.pred_areas.sum() - ov.pred_areas[ov.pair_pred[sel]].sum()
    return [float(c), float(u)]


def _pq_matches(ov: InstanceOverlap, match_iou: float) -> np.ndarray:
    """Indices of the PQ matches: ``IoU > match_iou``; Hungarian max-IoU first when ``match_iou < 0.5``."""
    if match_iou >= 0.5:
        return np.flatnonzero(ov.pair_iou > match_iou)  # unique both ways
    sel = max_iou_matching(ov)
    return sel[ov.pair_iou[sel] > match_iou]


def _stats_pq(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    sel = _pq_matches(ov, spec.match_iou)
    tp = sel.size
    return [tp, ov.n_pred - tp, ov.n_gt - tp, float(ov.pair_iou[sel].sum())]


def _dsb_tp(ov: InstanceOverlap, t: float, strict: bool) -> int:
    edges = ov.pair_iou > t if strict else ov.pair_iou >= t
    return max_cardinality_matching_size(ov, edges)


def _stats_dsb(spec: InstanceMetricSpec, ov: InstanceOverlap) -> np.ndarray:
    out = []
    for t in spec.dsb_thresholds:
        tp = _dsb_tp(ov, t, spec.ap_strict)
        out += [tp, ov.n_pred - tp, ov.n_gt - tp]
    return np.asarray(out, dtype=np.float64)


def _best_per(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    np.maximum.at(out, index, values)
    return out


def _stats_sbd(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    d = ov.pair_dice
    return [_best_per(ov.pair_gt, d, ov.n_gt).sum(), ov.n_gt, _best_per(ov.pair_pred, d, ov.n_pred).sum(), ov.n_pred]


def _pairs2(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float((x * x - x).sum())


def _stats_are(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    gt_on_bg = ov.gt_areas - ov.gt_matched_pixels  # GT pixels where the prediction is background
    sum_p = _pairs2(ov.pair_inter) + _pairs2(gt_on_bg)
    sum_a = _pairs2(ov.gt_areas)
    sum_b = _pairs2(ov.pred_matched_pixels) + _pairs2(gt_on_bg.sum())
    return [sum_p, sum_a, sum_b, ov.n_gt, ov.n_pred]


def _stats_fg(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    return [ov.fg_intersection, ov.gt_fg, ov.pred_fg, ov.n_pixels]


def _stats_dice2(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    sizes = ov.gt_areas[ov.pair_gt].sum() + ov.pred_areas[ov.pair_pred].sum()
    return [2.0 * ov.pair_inter.sum(), float(sizes), ov.n_gt, ov.n_pred]


def _instance_dice_terms(ov: InstanceOverlap) -> list[float]:
    inter = ov.pair_inter.astype(np.float64)
    dice_pred = np.zeros(ov.n_pred)
    best = _first_per_group(ov.pair_pred, inter, ov.pair_gt)  # GT of largest intersection per prediction
    dice_pred[ov.pair_pred[best]] = ov.pair_dice[best]
    dice_gt = np.zeros(ov.n_gt)
    best = _first_per_group(ov.pair_gt, inter, ov.pair_pred)
    dice_gt[ov.pair_gt[best]] = ov.pair_dice[best]
    return [
        float((ov.pred_areas * dice_pred).sum()), float(ov.pred_areas.sum()),
        float((ov.gt_areas * dice_gt).sum()), float(ov.gt_areas.sum()),
    ]


def _stats_instance_dice(spec: InstanceMetricSpec, ov: InstanceOverlap) -> list[float]:
    return _instance_dice_terms(ov)


_STATS = {
    "aji": _stats_aji,
    "aji_plus": _stats_aji_plus,
    "aji_groups": _stats_aji_groups,
    "pq": _stats_pq,
    "dsb": _stats_dsb,
    "sbd": _stats_sbd,
    "are": _stats_are,
    "fg": _stats_fg,
    "dice2": _stats_dice2,
    "instance_dice": _stats_instance_dice,
}

# ----------------------------------------------------------------------------------------------------------
# statistics -> values (vectorised over leading axes; called under np.errstate(divide/invalid="ignore"))
# ----------------------------------------------------------------------------------------------------------


def _final_aji(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    return {"aji": np.where(s[..., 1] > 0, s[..., 0] / s[..., 1], spec.empty_value)}


def _final_aji_plus(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    return {"aji_plus": np.where(s[..., 1] > 0, s[..., 0] / s[..., 1], spec.empty_value)}


def _final_aji_groups(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "aji_adjacent": np.where(s[..., 1] > 0, s[..., 0] / s[..., 1], np.nan),
        "aji_non_adjacent": np.where(s[..., 3] > 0, s[..., 2] / s[..., 3], np.nan),
    }


def _final_pq(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn, iou_sum = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    empty = tp + fp + fn == 0
    den = tp + 0.5 * fp + 0.5 * fn
    ev = spec.empty_value
    return {
        "pq": np.where(empty, ev, iou_sum / den),
        "dq": np.where(empty, ev, tp / den),
        "sq": np.where(empty, ev, np.where(tp > 0, iou_sum / tp, 0.0)),
    }


def _final_dsb(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for k, t in enumerate(spec.dsb_thresholds):
        tp, fp, fn = s[..., 3 * k], s[..., 3 * k + 1], s[..., 3 * k + 2]
        total = tp + fp + fn
        out[ap_key(t)] = np.where(total > 0, tp / total, spec.empty_value)
    if "dsb_map" in spec.keys:
        out["dsb_map"] = np.mean([out[ap_key(t)] for t in spec.ap_thresholds], axis=0)
    return out


def _final_sbd(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    sg, n, sp, m = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    value = np.minimum(sg / n, sp / m)
    value = np.where((n > 0) & (m > 0), value, 0.0)
    return {"sbd": np.where((n == 0) & (m == 0), spec.empty_value, value)}


def _final_are(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    sp, sa, sb, n, m = s[..., 0], s[..., 1], s[..., 2], s[..., 3], s[..., 4]
    den = 0.5 * sa + 0.5 * sb
    value = np.where(den > 0, 1.0 - sp / den, 0.0)  # no pixel pair shares a segment anywhere: no error
    value = np.where((n > 0) & (m > 0), value, 1.0)
    return {"are": np.where((n == 0) & (m == 0), 1.0 - spec.empty_value, value)}


def _final_fg(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    inter, g, p, n = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    fg_present = g + p > 0
    fg_iou = np.where(fg_present, inter / (g + p - inter), spec.empty_value)
    bg_union = n - inter
    bg_present = bg_union > 0
    bg_iou = np.where(bg_present, (n - g - p + inter) / bg_union, 0.0)
    n_cls = fg_present.astype(np.float64) + bg_present
    miou = np.where(n_cls > 0, (np.where(fg_present, fg_iou, 0.0) + bg_iou) / n_cls, spec.empty_value)
    return {
        "fg_dice": np.where(fg_present, 2.0 * inter / (g + p), spec.empty_value),
        "fg_iou": fg_iou,
        "miou": miou,
    }


def _final_dice2(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    num, den, n, m = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    return {"dice2": np.where(den > 0, num / den, np.where(n + m == 0, spec.empty_value, 0.0))}


def _final_instance_dice(spec: InstanceMetricSpec, s: np.ndarray) -> dict[str, np.ndarray]:
    pd, pa, gd, ga = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    half_p = np.where(pa > 0, pd / pa, 0.0)
    half_g = np.where(ga > 0, gd / ga, 0.0)
    return {"instance_dice": np.where((pa == 0) & (ga == 0), spec.empty_value, 0.5 * (half_p + half_g))}


_FINAL = {
    "aji": _final_aji,
    "aji_plus": _final_aji_plus,
    "aji_groups": _final_aji_groups,
    "pq": _final_pq,
    "dsb": _final_dsb,
    "sbd": _final_sbd,
    "are": _final_are,
    "fg": _final_fg,
    "dice2": _final_dice2,
    "instance_dice": _final_instance_dice,
}

# ----------------------------------------------------------------------------------------------------------
# public per-image functions
# ----------------------------------------------------------------------------------------------------------


def _as_overlap(gt: Any, pred: Any, overlap_kwargs: Mapping[str, Any], adjacency: bool = False) -> InstanceOverlap:
    if isinstance(gt, InstanceOverlap):
        if pred is not None:
            raise TypeError("pass either an InstanceOverlap or (gt, pred), not both")
        if adjacency and gt.gt_adjacent is None:
            raise ValueError("this metric needs compute_overlap(..., adjacency=True)")
        return gt
    if pred is None:
        raise TypeError("pred is required when gt is a label image")
    return compute_overlap(gt, pred, adjacency=adjacency, **overlap_kwargs)


def _single(gt: Any, pred: Any, names: Sequence[str], spec_kwargs: Mapping[str, Any],
            overlap_kwargs: Mapping[str, Any]) -> dict[str, float]:
    spec = InstanceMetricSpec(names, **spec_kwargs)
    ov = _as_overlap(gt, pred, overlap_kwargs, spec.needs_adjacency)
    return spec.as_dict(spec.finalize(spec.statistics(ov)))


def aji(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """Aggregated Jaccard Index (MoNuSeg / HoVer-Net ``get_fast_aji``).

    Each GT instance is paired with the prediction of highest IoU (ties: lowest prediction id; a prediction
    may serve several GT).  ``AJI = sum |G n S*| / (sum |G u S*| + |GT without overlap| + |predictions never
    paired|)``.  Both empty: ``empty_value``; one side empty: 0.

    Args:
        gt: GT label image, or an :class:`InstanceOverlap` (then ``pred`` is omitted).
        pred: predicted label image.
        empty_value: value when both images have no instance.
        overlap_kwargs: passed to :func:`compute_overlap` (``ignore_negative``, ``allow_integral_float``).
    """
    return _single(gt, pred, ["aji"], {"empty_value": empty_value}, overlap_kwargs)["aji"]


def aji_plus(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """AJI+ (HoVer-Net ``get_fast_aji_plus``): AJI with a one-to-one matching maximising the summed IoU.

    Matched pairs add their intersection to ``C`` and union to ``U``; unmatched GT and predictions add their
    areas to ``U``.  Both empty: ``empty_value``; one side empty: 0.
    """
    return _single(gt, pred, ["aji_plus"], {"empty_value": empty_value}, overlap_kwargs)["aji_plus"]


def panoptic_quality(
    gt: Any, pred: Any = None, *, match_iou: float = 0.5, empty_value: float = 1.0, **overlap_kwargs: Any
) -> tuple[float, float, float]:
    """Panoptic quality as ``(pq, dq, sq)`` (HoVer-Net ``get_fast_pq`` / MONAI ``compute_panoptic_quality``).

    Matches are pairs with ``IoU > match_iou`` (strict; unique for ``match_iou >= 0.5``); for
    ``match_iou < 0.5`` the Hungarian max-IoU matching is filtered by the same test.
    ``DQ = TP / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 if no match), ``PQ = DQ * SQ``; no smoothing.
    Both empty: ``empty_value`` for all three.
    """
    d = _single(gt, pred, ["pq", "dq", "sq"], {"match_iou": match_iou, "empty_value": empty_value}, overlap_kwargs)
    return d["pq"], d["dq"], d["sq"]


def dsb_ap(
    gt: Any,
    pred: Any = None,
    *,
    thresholds: float | Sequence[float] = _DEFAULT_AP_THRESHOLDS,
    strict: bool = False,
    empty_value: float = 1.0,
    **overlap_kwargs: Any,
) -> float | np.ndarray:
    """DSB-2018 "average precision" ``TP / (TP + FP + FN)`` per IoU threshold (cellpose, StarDist ``accuracy``).

    ``TP`` is the size of a maximum one-to-one matching among pairs with ``IoU >= t`` (``IoU > t`` if
    ``strict``).  For ``t > 0.5`` (or ``t = 0.5`` strict) matches are unique and simply counted.
    Returns a float for a scalar ``thresholds``, else an array aligned with ``thresholds``.
    """
    scalar = np.isscalar(thresholds)
    thr = [thresholds] if scalar else list(thresholds)  # type: ignore[list-item]
    if not thr:
        raise ValueError("thresholds: give at least one IoU threshold")
    names = [ap_key(_check_threshold(t, "thresholds")) for t in thr]
    d = _single(gt, pred, names, {"ap_strict": strict, "empty_value": empty_value, "ap_thresholds": ()},
                overlap_kwargs)
    values = np.array([d[n] for n in names])
    return float(values[0]) if scalar else values


def sbd(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """Symmetric best Dice (CVPPP): ``min(BD(G, S), BD(S, G))``, ``BD(A, B) = mean_a max_b Dice(a, b)``.

    Both empty: ``empty_value``; one side empty: 0 (as elf).
    """
    return _single(gt, pred, ["sbd"], {"empty_value": empty_value}, overlap_kwargs)["sbd"]


def adapted_rand_error(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """Adapted Rand error (``skimage.metrics.adapted_rand_error``, alpha 0.5, GT background ignored).

    ``ARE = 1 - sum_ij (p_ij^2 - p_ij) / (0.5 sum_i (a_i^2 - a_i) + 0.5 sum_j (b_j^2 - b_j))`` over the
    contingency table ``p`` of GT-foreground pixels (predicted background is one segment), ``a``/``b`` its
    row/column sums.  Both empty: ``1 - empty_value``; one side without instances: 1.0 (worst).
    """
    return _single(gt, pred, ["are"], {"empty_value": empty_value}, overlap_kwargs)["are"]


def foreground_dice(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """Binary foreground Dice ``2|G n P| / (|G| + |P|)`` of ``gt > 0`` and ``pred > 0``; both empty: ``empty_value``."""
    return _single(gt, pred, ["fg_dice"], {"empty_value": empty_value}, overlap_kwargs)["fg_dice"]


def foreground_iou(
    gt: Any, pred: Any = None, *, include_background: bool = False, empty_value: float = 1.0, **overlap_kwargs: Any
) -> float:
    """Binary foreground IoU ``|G n P| / |G u P|``; both empty: ``empty_value``.

    With ``include_background=True`` the mean of the background and foreground IoU over the classes present
    in either image (COIN's "IoU"); ``empty_value`` only for an image without pixels.
    """
    name = "miou" if include_background else "fg_iou"
    return _single(gt, pred, [name], {"empty_value": empty_value}, overlap_kwargs)[name]


def dice2(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """HoVer-Net DICE2: ``2 sum I_ij / sum (|G_i| + |S_j|)`` over every overlapping pair; no pair: 0."""
    return _single(gt, pred, ["dice2"], {"empty_value": empty_value}, overlap_kwargs)["dice2"]


def instance_dice(gt: Any, pred: Any = None, *, empty_value: float = 1.0, **overlap_kwargs: Any) -> float:
    """Area-weighted instance Dice of one image (CKS / LACSS ``Dice``; pooled version in :mod:`.ranked`).

    ``D_j = 2 I_jg* / (|S_j| + |G_g*|)`` with ``g*`` the GT of largest intersection (ties: lowest id; 0 if
    none), likewise ``D_g`` for each GT; ``Dice = (sum_j |S_j| D_j / sum |S| + sum_g |G_g| D_g / sum |G|) / 2``.
    """
    return _single(gt, pred, ["instance_dice"], {"empty_value": empty_value}, overlap_kwargs)["instance_dice"]


def aji_breakdown(
    gt: Any, pred: Any = None, *, connectivity: int | None = None, **overlap_kwargs: Any
) -> dict[str, float]:
    """AJI split into GT instances touching another GT instance ("adjacent") and the rest (COIN Tab. 13).

    Returns ``aji``, ``aji_adjacent``, ``aji_non_adjacent`` (``nan`` for an empty group), ``n_adjacent`` and
    ``n_non_adjacent`` (GT counts).  See the module docstring for how predictions are assigned to groups.

    Args:
        gt: GT label image (or an overlap built with ``adjacency=True``).
        pred: predicted label image.
        connectivity: neighbourhood of "touching" (``None``: full, 8 in 2D / 26 in 3D; ``1``: faces).
    """
    if not isinstance(gt, InstanceOverlap):
        overlap_kwargs = {**overlap_kwargs, "connectivity": connectivity}
    ov = _as_overlap(gt, pred, overlap_kwargs, adjacency=True)
    out = _single(ov, None, ["aji", "aji_adjacent", "aji_non_adjacent"], {}, {})
    assert ov.gt_adjacent is not None
    out["n_adjacent"] = float(ov.gt_adjacent.sum())
    out["n_non_adjacent"] = float(ov.n_gt - ov.gt_adjacent.sum())
    return out


def instance_statistics(
    gt: Any,
    pred: Any = None,
    metrics: str | Sequence[str] | InstanceMetricSpec | None = None,
    **kwargs: Any,
) -> InstanceStats:
    """Sufficient statistics of one image for later per-image or pooled aggregation.

    Args:
        gt: GT label image or :class:`InstanceOverlap`.
        pred: predicted label image (omit with an overlap).
        metrics: names or a ready :class:`InstanceMetricSpec`.
        kwargs: :class:`InstanceMetricSpec` options (``match_iou``, ``ap_thresholds``, ``ap_strict``,
            ``empty_value``) and :func:`compute_overlap` options (``ignore_negative``,
            ``allow_integral_float``, ``connectivity``, ``method``).
    """
    spec_kw, ov_kw = _split_kwargs(kwargs)
    if isinstance(metrics, InstanceMetricSpec):
        if spec_kw:
            raise TypeError(f"options {sorted(spec_kw)} conflict with a ready InstanceMetricSpec")
        spec = metrics
    else:
        spec = InstanceMetricSpec(metrics, **spec_kw)
    ov = _as_overlap(gt, pred, ov_kw, spec.needs_adjacency)
    return InstanceStats(spec, spec.statistics(ov))


_SPEC_KEYS = {"match_iou", "ap_thresholds", "ap_strict", "empty_value"}
_OVERLAP_KEYS = {"ignore_negative", "allow_integral_float", "connectivity", "method"}


def _split_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    unknown = set(kwargs) - _SPEC_KEYS - _OVERLAP_KEYS
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)}; known: {sorted(_SPEC_KEYS | _OVERLAP_KEYS)}")
    spec_kw = {k: v for k, v in kwargs.items() if k in _SPEC_KEYS}
    return spec_kw, {k: v for k, v in kwargs.items() if k in _OVERLAP_KEYS}


def instance_metrics(
    gt: Any,
    pred: Any = None,
    metrics: str | Sequence[str] | None = None,
    *,
    match_iou: float = 0.5,
    ap_thresholds: float | Sequence[float] = _DEFAULT_AP_THRESHOLDS,
    ap_strict: bool = False,
    empty_value: float = 1.0,
    ignore_negative: bool = False,
    allow_integral_float: bool = False,
    connectivity: int | None = None,
) -> dict[str, float]:
    """Compute a set of metrics of one image from ONE overlap table.

    Args:
        gt: GT label image, or an :class:`InstanceOverlap` (``pred`` omitted).
        pred: predicted label image, same shape.
        metrics: names (``None`` = :data:`DEFAULT_METRICS`); see :class:`InstanceMetricSpec`.
        match_iou: PQ threshold (``IoU > match_iou``).
        ap_thresholds: thresholds of ``dsb_ap`` / ``dsb_map``.
        ap_strict: DSB AP with ``IoU > t`` instead of ``>= t``.
        empty_value: value when both images are empty.
        ignore_negative: drop negative (ignore) pixels instead of raising.
        allow_integral_float: accept float arrays of whole numbers.
        connectivity: adjacency neighbourhood for ``aji_adjacent`` / ``aji_non_adjacent``.

    Returns:
        ``{name: value}`` in the order of the requested names (``dsb_ap`` expanded to ``ap50`` ...).
    """
    spec = InstanceMetricSpec(metrics, match_iou=match_iou, ap_thresholds=ap_thresholds, ap_strict=ap_strict,
                              empty_value=empty_value)
    ov = _as_overlap(gt, pred, {"ignore_negative": ignore_negative, "allow_integral_float": allow_integral_float,
                                "connectivity": connectivity}, spec.needs_adjacency)
    return spec.as_dict(spec.finalize(spec.statistics(ov)))


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan column -> nan, documented
        return np.nanmean(values, axis=0)


def aggregate_metrics(
    items: Iterable[Any],
    mode: str = "per_image",
    metrics: str | Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Dataset-level metrics from per-image inputs, averaged per image or pooled.

    Args:
        items: per image, one of: a ``(gt, pred)`` pair of label images, an :class:`InstanceOverlap`, an
            :class:`InstanceStats`, or a plain ``{name: value}`` dict (``per_image`` only).  Do not mix
            plain dicts with the other kinds.
        mode: ``"per_image"`` (mean of per-image values, ``nan`` skipped; a metric ``nan`` in every image stays
            ``nan``) or ``"pooled"`` (statistics summed over images, metric computed once).
        metrics: names for pairs / overlaps (ignored for :class:`InstanceStats`, which carry their spec).
        kwargs: :class:`InstanceMetricSpec` and :func:`compute_overlap` options, as :func:`instance_statistics`.

    Raises:
        ValueError: unknown mode, no items, plain dicts with ``mode="pooled"``, mixed specs.
    """
    if mode not in ("per_image", "pooled"):
        raise ValueError(f"mode must be 'per_image' or 'pooled', got {mode!r}")
    items = list(items)
    if not items:
        raise ValueError("aggregate_metrics: no images to aggregate")
    if all(isinstance(it, Mapping) for it in items):
        if mode == "pooled":
            raise ValueError(
                "pooled aggregation needs statistics, not per-image values: pass (gt, pred) pairs, "
                "InstanceOverlap or InstanceStats items"
            )
        keys: list[str] = []
        for it in items:
            keys += [k for k in it if k not in keys]
        table = np.array([[float(it.get(k, np.nan)) for k in keys] for it in items])
        return dict(zip(keys, (float(v) for v in _nanmean_rows(table))))
    spec_kw, ov_kw = _split_kwargs(kwargs)
    spec: InstanceMetricSpec | None = None
    rows = []
    for it in items:
        if isinstance(it, InstanceStats):
            if spec is None:
                spec = it.spec
            elif it.spec.signature() != spec.signature():
                raise ValueError("aggregate_metrics: InstanceStats computed with different metric specs")
            rows.append(it.data)
            continue
        if isinstance(it, Mapping):
            raise ValueError("aggregate_metrics: do not mix plain value dicts with pairs / overlaps / stats")
        if spec is None:
            spec = InstanceMetricSpec(metrics, **spec_kw)
        if isinstance(it, InstanceOverlap):
            ov = _as_overlap(it, None, ov_kw, spec.needs_adjacency)
        elif isinstance(it, (tuple, list)) and len(it) == 2:
            ov = _as_overlap(it[0], it[1], ov_kw, spec.needs_adjacency)
        else:
            raise TypeError(f"aggregate_metrics: cannot use an item of type {type(it).__name__}")
        rows.append(spec.statistics(ov))
    assert spec is not None
    stats = np.stack(rows)
    values = spec.finalize(stats.sum(axis=0)) if mode == "pooled" else _nanmean_rows(spec.finalize(stats))
    return spec.as_dict(values)
