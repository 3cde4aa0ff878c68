# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Instance-aware pseudo-label (IPL) selection and cross-teaching targets (arXiv 2510.16450; rules read from the
authors' public code, see the bundle README).

For one target slice, given the teacher's flip-averaged foreground probability ``p`` and centre heatmap ``h`` and
the sparse point labels:

1. ``p > tau`` is confident foreground, ``p < 1 - tau`` confident background (optionally widened for an
   under-confident teacher, ``bg_quantile``), the rest is ignored (255).
2. Connected components of the confident foreground (smaller than ``min_size`` px dropped) that contain a point
   are **kept** (point-verified instances).
3. Detection -> segmentation (instance selection): every other component is scored by its best centre peak, the
   highest value of ``h`` inside it (:func:`component_scores`); the ``ceil(N * r)`` best (peak >=
   ``peak_threshold``) are also kept, ``N`` being the count estimate (``count_mode``; code: ``sum(h) /
   kernel_sum``) and ``r`` the round's ratio (growing round by round).
   Components that are neither point-verified nor selected are ignored (255), not background.
4. Points that no component covers get a **prior shape** (an ellipse of ``prior_radius``, foreground) inside an
   **ignore zone** (``ignore_radius``): the object is there but its extent is unknown.
5. Segmentation -> detection: the new detection target is a Gaussian at the centroid of every pseudo-label
   component (kept, selected, prior shapes), and its weight map is 1 on the teacher's detection background
   (``h < bg_eps * peak``; by default also confident segmentation background, see ``bg_from_seg``) except within
   ``det_ignore_radius`` of a point, 1 where the new target is > 0, plus ``point_weight`` x a Gaussian map of the
   points themselves.

Without a teacher (round 0: ``prob=None``) only the points speak: prior shapes + ignore zones, and detection
targets at the points with weights on their Gaussians (target point supervision of the detection head).
Without points (UDA) the pseudo-points are the heatmap maxima of the ``ceil(N * r_points)`` best confident
components (:func:`pseudo_points_from_peaks`).

Everything is whole-array NumPy / SciPy: component statistics by ``bincount`` / ``maximum.at``, zones by one
distance transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from monai_ext.errors import DataError
from monai_ext.transforms.em import (
    IGNORE_INDEX,
    instance_centres,
    instance_targets,
    kernel_sum,
    point_zone,
    points_to_heatmap,
)

__all__ = ["IPLResult", "background_mask", "component_scores", "pseudo_points_from_peaks", "select_instances",
           "point_targets", "supervised_targets", "merge_stats"]


@dataclass
class IPLResult:
    """Pseudo-labels of one slice.

    Attributes:
        seg: ``uint8 (H, W)``: 0 background, 1 mitochondrion, 255 ignore.
        det: ``float32 (H, W)`` centre heatmap target.
        det_weight: ``float32 (H, W)`` per-pixel weight of the detection loss (0 = ignored).
        point_mask: ``uint8 (H, W)``: 1 on point-verified pseudo-instances (components hit by a point and prior
            shapes), for the contrastive loss's point prototype.
        stats: counts of this slice (see :func:`merge_stats`).
    """

    seg: np.ndarray
    det: np.ndarray
    det_weight: np.ndarray
    point_mask: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays stored per sample in the pseudo-label store."""
        return {"seg": self.seg, "det": self.det.astype(np.float32), "det_weight": self.det_weight.astype(np.float32),
                "point_mask": self.point_mask}


def _components(mask: np.ndarray, min_size: int, connectivity: int) -> tuple[np.ndarray, int]:
    structure = ndimage.generate_binary_structure(2, connectivity)
    comps, n = ndimage.label(mask, structure=structure)
    if n and min_size > 1:
        areas = np.bincount(comps.ravel(), minlength=n + 1)
        small = areas < min_size
        small[0] = False
        comps[small[comps]] = 0
    return comps, n


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(pts)):
        raise DataError("points contain NaN or inf")
    idx = np.rint(pts).astype(np.int64)
    keep = (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
    return idx[keep]


def component_scores(comps: np.ndarray, n: int, heatmap: np.ndarray, prob: np.ndarray, rank_by: str = "heatmap"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(score, best)`` of components ``1..n`` (index 0 and empty ids: ``-inf``).

    ``best`` is the highest heatmap value inside each component (its best centre peak). ``score`` ranks the
    components: ``rank_by="heatmap"`` (paper: the detection peak) or ``"heatmap_area"`` (peak x sqrt(area / median
    area): a size-aware objectness that keeps small distractors with a centre-like blob from outranking
    mitochondria while the target detector is still weak); ``1e-3`` x the mean probability breaks ties (e.g. a
    heatmap still flat on the target domain). One ``maximum.at`` and two ``bincount`` passes."""
    flat = comps.ravel()
    best = np.zeros(n + 1, np.float64)
    np.maximum.at(best, flat, np.asarray(heatmap, np.float64).ravel())
    cnt = np.bincount(flat, minlength=n + 1)
    mean_p = np.bincount(flat, np.asarray(prob, np.float64).ravel(), minlength=n + 1) / np.maximum(cnt, 1)
    if rank_by == "heatmap":
        score = best.copy()
    elif rank_by == "heatmap_area":
        med = float(np.median(cnt[1:][cnt[1:] > 0])) if (cnt[1:] > 0).any() else 1.0
        score = best * np.sqrt(cnt / max(med, 1.0))
    else:
        raise ValueError(f"rank_by must be 'heatmap' or 'heatmap_area', got {rank_by!r}")
    score = score + 1e-3 * mean_p
    best[0] = score[0] = -np.inf
    best[cnt == 0] = score[cnt == 0] = -np.inf
    return score, best


def _reference_peak(best: np.ndarray, kept: np.ndarray, peak: float, mode: str) -> float:
    """The heatmap level ``peak_threshold`` refers to (see :func:`select_instances`)."""
    if mode == "absolute":
        return float(peak)
    if mode != "points":
        raise ValueError(f"peak_reference must be 'absolute' or 'points', got {mode!r}")
    hit = best[kept & np.isfinite(best)]
    return float(np.median(hit)) if hit.size else float(peak)


def background_mask(prob: np.ndarray, tau: float, bg_quantile: float = 0.0) -> np.ndarray:
    """Confident background: ``p < 1 - tau``, or ``p`` below the ``bg_quantile``-quantile of the pixels predicted
    background (``p < 0.5``) when ``bg_quantile > 0`` (see :func:`select_instances`)."""
    p = np.asarray(prob, np.float32)
    if not 0.0 <= bg_quantile <= 1.0:
        raise ValueError(f"bg_quantile must be in [0, 1], got {bg_quantile}")
    thr = 1.0 - float(tau)
    if bg_quantile > 0:
        pred_bg = p[p < 0.5]
        if pred_bg.size:
            thr = max(thr, float(np.quantile(pred_bg, bg_quantile)))
    return p < thr


def _estimate_count(h: np.ndarray, n_comp: float, sigma: float, peak: float, count_mode: str) -> float:
    est_h = float(h.sum()) / kernel_sum(sigma, peak)
    if count_mode == "heatmap":
        return est_h
    if count_mode == "components":
        return n_comp
    if count_mode == "max":
        return max(est_h, n_comp)
    raise ValueError(f"count_mode must be 'heatmap', 'components' or 'max', got {count_mode!r}")


def pseudo_points_from_peaks(prob: np.ndarray, heatmap: np.ndarray, ratio: float, tau: float = 0.9,
                             sigma: float = 4.0, peak: float = 1.0, peak_threshold: float = 0.0, min_size: int = 4,
                             connectivity: int = 1, count_mode: str = "max", rank_by: str = "heatmap") -> np.ndarray:
    """UDA pseudo-points: in the ``ceil(N * ratio)`` best confident foreground components (scored by
    :func:`component_scores`, best heatmap value >= ``peak_threshold * peak``), the position of the heatmap maximum
    (the most interior pixel when the heatmap is flat there). ``N`` is estimated as in :func:`select_instances`.
    Returns ``(K, 2)`` float32 (y, x)."""
    p = np.asarray(prob, np.float32)
    h = np.asarray(heatmap, np.float32)
    comps, n = _components(p > tau, min_size, connectivity)
    n_comp = float(np.count_nonzero(np.bincount(comps.ravel(), minlength=n + 1)[1:]))
    k = int(math.ceil(_estimate_count(h, n_comp, sigma, peak, count_mode) * float(ratio) - 1e-9))
    if k <= 0 or n_comp == 0:
        return np.zeros((0, 2), np.float32)
    score, best = component_scores(comps, n, h, p, rank_by)
    cand = np.nonzero(np.isfinite(score) & (best >= peak_threshold * peak))[0]
    top = cand[np.argsort(-score[cand], kind="stable")][:k]
    if top.size == 0:
        return np.zeros((0, 2), np.float32)
    inner = ndimage.distance_transform_edt(comps > 0)
    pos = ndimage.maximum_position(h + 1e-6 * inner, comps, top)
    return np.asarray(pos, np.float32).reshape(-1, 2)


def point_targets(points: np.ndarray, shape: tuple[int, int], sigma: float = 4.0, peak: float = 1.0,
                  prior_radius: float | tuple[float, float] = 4.0, ignore_radius: float | tuple[float, float] = 16.0,
                  point_weight: float = 3.0) -> IPLResult:
    """Teacher-free targets from points alone (round 0): prior shapes in ignore zones, heatmaps at the points,
    detection weights on the point Gaussians only (the background is unknown)."""
    pts = _inside(points, shape).astype(np.float32)
    prior = point_zone(pts, shape, prior_radius)
    seg = np.full(shape, IGNORE_INDEX, np.uint8)
    seg[prior] = 1
    det = points_to_heatmap(pts, shape, sigma, peak)
    weight = (det > 1e-3 * peak).astype(np.float32) + point_weight * det / max(peak, 1e-12)
    stats = {"points": float(len(pts)), "uncovered_points": float(len(pts)), "kept_by_points": 0.0,
             "peaks_added": 0.0, "components": 0.0, "count_estimate": float(len(pts)),
             "ignored_fraction": float((seg == IGNORE_INDEX).mean()), "fg_fraction": float((seg == 1).mean())}
    return IPLResult(seg, det, weight.astype(np.float32), prior.astype(np.uint8), stats)


def supervised_targets(label: np.ndarray, sigma: float = 4.0, peak: float = 1.0, centre: str = "centroid") -> IPLResult:
    """Fully supervised targets from a ground-truth instance map (the upper bound's "pseudo-labels")."""
    lab = np.asarray(label)
    seg, det, weight = instance_targets(lab, sigma, peak, centre)
    n = float(len(np.unique(lab[lab > 0])))
    return IPLResult(seg, det, weight, (lab > 0).astype(np.uint8),
                     {"components": n, "kept_by_points": n, "peaks_added": 0.0, "uncovered_points": 0.0,
                      "points": 0.0, "count_estimate": n, "ignored_fraction": float((seg == IGNORE_INDEX).mean()),
                      "fg_fraction": float((seg == 1).mean())})


def select_instances(
    prob: np.ndarray | None,
    heatmap: np.ndarray | None,
    points: np.ndarray,
    ratio: float,
    tau: float = 0.9,
    *,
    sigma: float = 4.0,
    peak: float = 1.0,
    min_size: int = 4,
    connectivity: int = 1,
    peak_threshold: float = 0.05,
    prior_radius: float | tuple[float, float] = 4.0,
    ignore_radius: float | tuple[float, float] = 16.0,
    det_ignore_radius: float = 16.0,
    bg_eps: float = 0.05,
    point_weight: float = 3.0,
    centre: str = "centroid",
    count: float | None = None,
    count_mode: str = "max",
    bg_from_seg: bool = True,
    rank_by: str = "heatmap",
    bg_quantile: float = 0.0,
    peak_reference: str = "absolute",
) -> IPLResult:
    """Instance-aware pseudo-labels of one 2D slice (see the module docstring for the rules).

    Args:
        prob: teacher foreground probability ``(H, W)`` (``None``: no teacher, see :func:`point_targets`).
        heatmap: teacher centre heatmap ``(H, W)`` (same scale as ``peak``).
        points: ``(N, 2)`` (y, x) point labels (GT points in WDA, pseudo-points in UDA).
        ratio: the round's ``r``: share of the estimated count added from detection peaks.
        tau: confidence threshold (paper: 0.9 in stage 1, 0.8 in stage 2).
        sigma, peak: heatmap Gaussian of the detection targets.
        min_size: components smaller than this (px) are dropped (paper: 4).
        connectivity: 1 (4-connected) or 2 (8-connected) components.
        peak_threshold: minimum best heatmap value inside a component (fraction of ``peak``) for it to be selectable.
        prior_radius, ignore_radius: prior shape and ignore zone around uncovered points (px; ``r`` or ``(ry, rx)``).
        det_ignore_radius: no background detection weight within this radius of a point.
        bg_eps: teacher heatmap values below ``bg_eps * peak`` count as detection background.
        point_weight: extra weight of the point Gaussians in the detection loss (paper: 3).
        centre: centres of pseudo-instances, ``"centroid"`` (paper) or ``"inside"``.
        count: the instance count ``N`` (overrides ``count_mode``).
        count_mode: how ``N`` is estimated: ``"heatmap"`` (paper code: ``sum(h) / kernel_sum``), ``"components"``
            (number of confident foreground components) or ``"max"`` of the two (default: robust when the
            teacher's detection head is still weak on the target domain).
        rank_by: how unselected components are ranked (see :func:`component_scores`).
        bg_from_seg: detection background = low heatmap **and** confident segmentation background (default), so
            confident but unselected components are ignored rather than taught as "no centre here"; ``False``
            uses the heatmap alone as the code does (on weak target heatmaps this suppresses detection round
            after round).
        bg_quantile: calibration of the confident background for an under-confident teacher: pixels whose
            foreground probability is below the ``bg_quantile``-quantile of the predicted background (``p < 0.5``)
            also count as confident background (``0``: the paper's rule ``p < 1 - tau`` alone). A teacher trained
            for minutes rather than the paper's 10k iterations per round keeps a probability floor of ~0.2 on
            plain background, so ``p < 0.1`` labels almost nothing and stage 2 would see foreground only.
        peak_reference: what ``peak_threshold`` is a fraction of: ``"absolute"`` (``peak``, the training targets'
            height; code) or ``"points"`` (the median best heatmap value of the point-hit components, ``peak`` when
            no point hits one). Under domain shift the teacher's target heatmap is often informative in its ranking
            but far below ``peak``; an absolute threshold then rejects every unlabelled component (the UDA rows
            of the benchmark added no peak in any round), while the point-verified instances calibrate what a
            mitochondrion's peak looks like on this domain.
    """
    pts_f = np.asarray(points, np.float32).reshape(-1, 2)
    if prob is None:
        shape = tuple(np.asarray(heatmap).shape) if heatmap is not None else None
        if shape is None:
            raise DataError("select_instances needs the teacher's probability map or at least a shape")
        return point_targets(pts_f, shape, sigma, peak, prior_radius, ignore_radius, point_weight)  # type: ignore[arg-type]
    p = np.asarray(prob, np.float32)
    h = np.asarray(heatmap, np.float32)
    if p.ndim != 2 or h.shape != p.shape:
        raise DataError(f"prob and heatmap must be 2D maps of one shape, got {p.shape} and {h.shape}")
    if not 0.5 <= tau < 1.0:
        raise ValueError(f"tau must be in [0.5, 1), got {tau}")
    shape = p.shape
    comps, n = _components(p > tau, min_size, connectivity)
    conf_bg = background_mask(p, tau, bg_quantile)
    pts = _inside(pts_f, shape)
    hit = comps[pts[:, 0], pts[:, 1]] if len(pts) else np.zeros(0, np.int64)
    kept = np.zeros(n + 1, bool)
    kept[hit[hit > 0]] = True
    uncovered = pts[hit == 0].astype(np.float32)
    # detection -> segmentation: rank the other components by their best heatmap peak
    n_comp = float(np.count_nonzero(np.bincount(comps.ravel(), minlength=n + 1)[1:]))
    est = float(count) if count is not None else _estimate_count(h, n_comp, sigma, peak, count_mode)
    k = int(math.ceil(max(est, 0.0) * float(ratio) - 1e-9)) if ratio > 0 else 0
    selected = kept.copy()
    n_added = 0
    if k > 0 and n > 0:
        score, best = component_scores(comps, n, h, p, rank_by)
        ref = _reference_peak(best, kept, peak, peak_reference)
        ok = np.isfinite(score) & ~kept & (best >= peak_threshold * ref)
        cand = np.nonzero(ok)[0]
        top = cand[np.argsort(-score[cand], kind="stable")][:k]
        selected[top] = True
        n_added = int(len(top))
    fg = selected[comps] & (comps > 0)
    prior = point_zone(uncovered, shape, prior_radius)
    zone = point_zone(uncovered, shape, ignore_radius)
    seg = np.full(shape, IGNORE_INDEX, np.uint8)
    seg[conf_bg & ~zone] = 0
    seg[fg | prior] = 1
    # segmentation -> detection: Gaussians at the centroids of the pseudo-instances (+ the uncovered points)
    inst = np.where(fg, comps, 0)
    centres = instance_centres(inst, centre)
    det = points_to_heatmap(np.concatenate([centres, uncovered]), shape, sigma, peak)
    bg = (h < bg_eps * peak) & ~point_zone(pts.astype(np.float32), shape, det_ignore_radius)
    if bg_from_seg:
        bg &= conf_bg
    weight = (bg | (det > 1e-3 * peak)).astype(np.float32)
    weight += point_weight * points_to_heatmap(pts.astype(np.float32), shape, sigma, 1.0)
    point_mask = (kept[comps] & (comps > 0)) | prior
    stats = {
        "points": float(len(pts)),
        "components": n_comp,
        "kept_by_points": float(kept.sum()),
        "peaks_added": float(n_added),
        "uncovered_points": float(len(uncovered)),
        "count_estimate": float(est),
        "ignored_fraction": float((seg == IGNORE_INDEX).mean()),
        "fg_fraction": float((seg == 1).mean()),
    }
    return IPLResult(seg, det, weight, point_mask.astype(np.uint8), stats)


def merge_stats(per_slice: list[dict[str, float]]) -> dict[str, Any]:
    """Round statistics: sums of the counts and means of the fractions over slices."""
    if not per_slice:
        return {}
    keys = sorted({k for s in per_slice for k in s})
    out: dict[str, Any] = {}
    for key in keys:
        vals = np.asarray([s.get(key, 0.0) for s in per_slice], np.float64)
        out[key] = float(vals.mean()) if key.endswith("fraction") else float(vals.sum())
    out["slices"] = len(per_slice)
    return out
