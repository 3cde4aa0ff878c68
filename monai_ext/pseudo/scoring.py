# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Step 2 of COIN: instance-level confidence scores, the adaptive threshold and the pseudo-labels they select.

- Refined masks of all instances of an image travel together as :class:`RefinedMasks`: one ``(N, S, S)``
  window per instance (its origin in the image, plus the refined area falling outside the window), so every
  step below is a handful of array operations for all instances at once.
- **Eq. 6** ``C_i = IoU(E_i, R(E_i))`` (:func:`consistency_scores`): prediction vs its refined mask (SAM, or
  the offline refiner), with exact areas.
- **Eq. 7** ``delta_k = min(mean(C) + std(C), 0.9)`` per image (``"mean+std"``, the README command), or
  ``mean(C)`` (``"mean"``, the public script's default), or a fixed number (:func:`adaptive_threshold`).
- **Eq. 8-10** accepted ``A = {i : C_i > delta}`` take their *refined* mask; other predicted foreground is
  ignore; the rest is background; the edge map is the contour of the accepted instances
  (:func:`build_pseudo_labels`).
- Recursion (Step 3): :func:`merge_with_previous` keeps a previously accepted instance unless a newly
  accepted one covers more than ``max_overlap`` of it, so the accepted set grows over rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_ext.errors import DataError
from monai_ext.postprocess.watershed import instance_areas, relabel_sequential
from monai_ext.transforms.coin import instances_to_targets

__all__ = [
    "RefinedMasks",
    "instance_ids",
    "instance_centroids",
    "window_origins",
    "gather_windows",
    "paste_windows",
    "consistency_scores",
    "adaptive_threshold",
    "build_pseudo_labels",
    "merge_with_previous",
    "score_statistics",
]


@dataclass
class RefinedMasks:
    """Refined masks of ``N`` instances, one ``S x S`` window each.

    Attributes:
        ids: instance ids ``(N,)`` of the prediction they refine.
        origins: top-left ``(y, x)`` of each window in image pixels ``(N, 2)`` (may stick out of the image).
        masks: ``(N, S, S)`` bool, the refined mask inside the window (pixels outside the image are False).
        extra_area: ``(N,)`` refined pixels outside the window (SAM may spill over), counted in the IoU.
        points: ``(N, 2)`` ``(y, x)`` prompt / seed point of each instance.
    """

    ids: np.ndarray
    origins: np.ndarray
    masks: np.ndarray
    extra_area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.extra_area.size == 0:
            self.extra_area = np.zeros(n, np.int64)
        if self.masks.shape[0] != n or self.origins.shape != (n, 2) or self.extra_area.shape != (n,):
            raise ValueError("RefinedMasks: ids, origins, masks and extra_area disagree on the instance count")

    @property
    def window(self) -> int:
        return int(self.masks.shape[-1])

    def areas(self) -> np.ndarray:
        n, h, w = self.masks.shape
        return self.masks.reshape(n, h * w).sum(1) + self.extra_area

    def select(self, keep: np.ndarray) -> RefinedMasks:
        pts = self.points[keep] if len(self.points) == len(self.ids) else self.points
        return RefinedMasks(self.ids[keep], self.origins[keep], self.masks[keep], self.extra_area[keep], pts)


def instance_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids ``> 0`` present in ``labels``."""
    return np.flatnonzero(instance_areas(labels)[1:]) + 1


def instance_centroids(labels: np.ndarray, ids: np.ndarray | None = None, inside: bool = False) -> np.ndarray:
    """``(N, 2)`` ``(y, x)`` point per instance: the centroid (COIN's prompt; may fall outside a non-convex
    instance) or, with ``inside=True``, its most interior pixel (maximum of the per-instance distance map)."""
    from scipy import ndimage

    lab = np.asarray(labels)
    ids = instance_ids(lab) if ids is None else np.asarray(ids)
    if ids.size == 0:
        return np.zeros((0, 2), np.float32)
    if inside:
        from skimage.segmentation import find_boundaries

        carved = (lab > 0) & ~find_boundaries(np.where(lab > 0, lab, 0), mode="inner")
        dist = ndimage.distance_transform_edt(carved) + (lab > 0)  # >0 everywhere inside an instance
        pos = ndimage.maximum_position(dist, lab, ids)
        return np.asarray(pos, np.float32).reshape(len(ids), 2)
    flat = lab.ravel().astype(np.int64)
    keep = flat > 0
    yy, xx = np.divmod(np.flatnonzero(keep), lab.shape[1])
    n = int(flat.max(initial=0)) + 1
    cnt = np.bincount(flat[keep], minlength=n).astype(np.float64)
    cy = np.bincount(flat[keep], weights=yy, minlength=n) / np.maximum(cnt, 1)
    cx = np.bincount(flat[keep], weights=xx, minlength=n) / np.maximum(cnt, 1)
    return np.stack([cy[ids], cx[ids]], 1).astype(np.float32)


def window_origins(points: np.ndarray, window: int) -> np.ndarray:
    """Top-left corners ``(N, 2)`` of ``window``-sized windows centred on ``points``."""
    return (np.floor(np.asarray(points)) - window // 2).astype(np.int64).reshape(-1, 2)


def gather_windows(array: np.ndarray, origins: np.ndarray, window: int, fill: Any = 0) -> np.ndarray:
    """Crops ``(N, S, S)`` of a 2D ``array`` at ``origins`` in one fancy-indexing call (outside -> ``fill``)."""
    a = np.asarray(array)
    n = len(origins)
    if n == 0:
        return np.zeros((0, window, window), a.dtype)
    pad = window
    padded = np.pad(a, pad, mode="constant", constant_values=fill)
    r = np.arange(window)
    ys = origins[:, 0, None, None] + pad + r[None, :, None]
    xs = origins[:, 1, None, None] + pad + r[None, None, :]
    ys = np.clip(ys, 0, padded.shape[0] - 1)
    xs = np.clip(xs, 0, padded.shape[1] - 1)
    return padded[ys, xs]


def paste_windows(shape: tuple[int, int], masks: np.ndarray, origins: np.ndarray, values: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Write ``values[i]`` where ``masks[i]`` is set, windows in order (later ones win); returns ``out``."""
    out = np.zeros(shape, np.int32) if out is None else out
    if len(masks) == 0:
        return out
    n, s, _ = masks.shape
    k, yy, xx = np.nonzero(masks)
    y = origins[k, 0] + yy
    x = origins[k, 1] + xx
    inside = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
    # numpy assigns repeated indices in order, so the last window in the list wins where they overlap
    out[y[inside], x[inside]] = np.asarray(values)[k[inside]]
    return out


def consistency_scores(pred: np.ndarray, refined: RefinedMasks) -> np.ndarray:
    """COIN Eq. 6: ``IoU(prediction_i, refined_i)`` for every refined instance, exact areas, ``(N,)``."""
    lab = np.asarray(pred)
    if len(refined.ids) == 0:
        return np.zeros(0, np.float64)
    crops = gather_windows(lab, refined.origins, refined.window, fill=0) == refined.ids[:, None, None]
    inter = (crops & refined.masks).reshape(len(refined.ids), -1).sum(1).astype(np.float64)
    areas = instance_areas(lab)
    a_pred = areas[np.clip(refined.ids, 0, len(areas) - 1)].astype(np.float64)
    union = a_pred + refined.areas() - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def adaptive_threshold(scores: np.ndarray, mode: str | float = "mean+std", cap: float = 0.9) -> float:
    """COIN Eq. 7, per image: ``min(mean + std, cap)`` (``"mean+std"``), ``mean`` (``"mean"``) or a fixed value."""
    s = np.asarray(scores, np.float64)
    if not isinstance(mode, str):
        return float(mode)
    if s.size == 0:
        return float(cap)
    if mode == "mean+std":
        return float(min(s.mean() + s.std(), cap))
    if mode == "mean":
        return float(s.mean())
    raise ValueError(f"threshold mode must be 'mean+std', 'mean' or a number, got {mode!r}")


def build_pseudo_labels(
    pred: np.ndarray,
    refined: RefinedMasks,
    scores: np.ndarray,
    threshold: float,
    edge_mode: str = "inner",
    min_area: int = 1,
    edge_width: int = 1,
) -> dict[str, Any]:
    """COIN Eq. 8-10: accepted instances (``score > threshold``) take their refined mask, the rest of the
    predicted foreground is ignore, everything else background.

    Refined masks are pasted in increasing score order (the most confident wins where two overlap). Returns
    ``instances`` (int32, ids ``1..A``, ``-1`` = ignore), ``seg`` and ``edge`` (uint8, 0/1/255) and
    ``accepted`` (the prediction ids accepted, ``(A,)``).
    """
    lab = np.asarray(pred)
    scores = np.asarray(scores, np.float64)
    if len(scores) != len(refined.ids):
        raise DataError(f"{len(scores)} scores for {len(refined.ids)} refined instances")
    acc = np.flatnonzero((scores > threshold) & (refined.areas() >= min_area))
    order = acc[np.argsort(scores[acc], kind="stable")]
    inst = paste_windows(lab.shape, refined.masks[order], refined.origins[order],
                         np.arange(1, len(order) + 1, dtype=np.int32))
    # a refined mask completely hidden by more confident ones disappears: keep ids compact
    inst = relabel_sequential(inst)
    inst[(lab > 0) & (inst == 0)] = -1
    seg, edge = instances_to_targets(inst, edge_mode, edge_width)
    return {"instances": inst, "seg": seg, "edge": edge, "accepted": refined.ids[order]}


def merge_with_previous(current: np.ndarray, previous: np.ndarray | None, max_overlap: float = 0.2) -> np.ndarray:
    """Grow the accepted set over rounds (Step 3).

    A previously accepted instance (``previous > 0``) is kept, with its earlier mask, where it does not meet the
    current round's accepted instances by more than ``max_overlap`` of its area; it is pasted only on pixels
    that are not accepted now (current ignore pixels included). Current accepted instances always win: the
    student of the later round sees more context. Returns an instance map (``-1`` = ignore).
    """
    cur = np.asarray(current).astype(np.int32, copy=True)
    if previous is None:
        return cur
    prev = np.asarray(previous)
    if prev.shape != cur.shape:
        raise DataError(f"previous pseudo-label shape {prev.shape} differs from {cur.shape}")
    pos = prev > 0
    if not pos.any():
        return cur
    area = instance_areas(prev)
    hit = np.bincount(prev[pos & (cur > 0)].astype(np.int64), minlength=len(area))
    keep = (area > 0) & (hit <= max_overlap * area)
    keep[0] = False
    take = pos & keep[np.where(pos, prev, 0)] & (cur <= 0)
    if take.any():
        offset = int(cur.max(initial=0))
        kept = relabel_sequential(np.where(take, prev, 0))
        cur[take] = kept[take] + offset
    return cur


def score_statistics(scores: np.ndarray, threshold: float, n_accepted: int) -> dict[str, Any]:
    """Per-image summary for logs."""
    s = np.asarray(scores, np.float64)
    return {"n_pred": int(s.size), "n_accepted": int(n_accepted), "threshold": float(threshold),
            "score_mean": float(s.mean()) if s.size else 0.0, "score_std": float(s.std()) if s.size else 0.0}

