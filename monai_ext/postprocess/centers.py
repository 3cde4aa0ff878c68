# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Multi-task output (foreground probability + centre heatmap) -> mitochondria instances, in 2D and 3D.

- :func:`local_peaks`: centre detection, local maxima of the heatmap (one maximum filter).
- :func:`connected_instances`: instances = connected components of the thresholded foreground.
- :func:`centre_watershed`: centre-seeded watershed: markers at the prominent heatmap maxima inside the foreground
  (:func:`centre_markers`), flooded over ``-heatmap`` within the foreground; components without a marker keep one
  id each (nothing is lost).
- :func:`instance_scores`: per-instance confidence = mean foreground probability (one ``bincount``).
- :func:`link_slices`: 3D assembly of per-slice instances: consecutive-slice instances are linked when they are
  each other's best overlap with IoU >= ``min_iou`` (one joint ``unique`` over all slice pairs), then linked
  chains become one 3D id (connected components of the link graph).
- :class:`EMInstancesd`: the post-processing transform of ``inference.json``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from monai.transforms import MapTransform
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from monai_ext.errors import DataError
from monai_ext.postprocess.watershed import (
    binary_fill_holes,
    check_finite,
    relabel_sequential,
    remove_small_instances,
    seed_orphans,
)
from monai_ext.utils import to_numpy

__all__ = [
    "local_peaks",
    "connected_instances",
    "centre_markers",
    "centre_watershed",
    "instance_scores",
    "link_slices",
    "instances_from_maps",
    "EMInstancesd",
]


def local_peaks(heatmap: np.ndarray, min_distance: int = 1, threshold: float = 0.0,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Local maxima ``(N, 2)`` (int (y, x)) of a 2D heatmap in a ``(2 m + 1)^2`` window, above ``threshold``
    (and inside ``mask`` when given). A flat plateau gives one peak (its first pixel)."""
    h = np.asarray(heatmap, np.float32)
    if h.ndim != 2:
        raise DataError(f"heatmap must be 2D, got shape {h.shape}")
    size = 2 * max(int(min_distance), 0) + 1
    peak = (h == ndimage.maximum_filter(h, size=size, mode="constant", cval=-np.inf)) & (h > threshold)
    if mask is not None:
        peak &= np.asarray(mask, bool)
    if not peak.any():
        return np.zeros((0, 2), np.int64)
    lab, n = ndimage.label(peak, structure=np.ones((3, 3), bool))
    flat = lab.ravel()
    order = np.argsort(flat, kind="stable")
    first = order[np.searchsorted(flat[order], np.arange(1, n + 1))]
    return np.stack(np.unravel_index(first, h.shape), 1).astype(np.int64)


def _mask(fg_prob: np.ndarray, fg_threshold: float, fill_holes: bool) -> np.ndarray:
    m = np.asarray(fg_prob, np.float32) > fg_threshold
    return binary_fill_holes(m) if fill_holes else m


def connected_instances(fg_prob: Any, fg_threshold: float = 0.5, min_size: int = 16, connectivity: int = 1,
                        fill_holes: bool = True) -> np.ndarray:
    """Instances = connected components of ``fg_prob > fg_threshold`` (2D), small ones dropped; ``int32`` 1..N."""
    p = np.asarray(to_numpy(fg_prob), np.float32)
    if p.ndim != 2:
        raise DataError(f"fg_prob must be 2D, got shape {p.shape}")
    check_finite(p, "fg_prob")
    lab, _ = ndimage.label(_mask(p, fg_threshold, fill_holes), ndimage.generate_binary_structure(2, connectivity))
    return remove_small_instances(lab, min_size)


def centre_markers(heatmap: np.ndarray, mask: np.ndarray, peak_threshold: float = 0.3, prominence: float = 0.2,
                   min_distance: int = 3) -> tuple[np.ndarray, int]:
    """Centre markers ``(labels, n)`` inside ``mask``: regional maxima of the heatmap at least ``prominence`` above
    their surroundings (``skimage.morphology.h_maxima``: a bumpy ridge along an elongated object stays one
    marker) and higher than ``peak_threshold``; ``prominence <= 0`` uses plain local maxima in a
    ``(2 min_distance + 1)^2`` window instead."""
    h = np.asarray(heatmap, np.float64)
    if prominence > 0:
        peaks = h_maxima(np.where(mask, h, 0.0), prominence).astype(bool) & (h > peak_threshold) & mask
        return ndimage.label(peaks, structure=np.ones((3, 3), bool))
    pk = local_peaks(h, min_distance, peak_threshold, mask)
    markers = np.zeros(h.shape, np.int32)
    if len(pk):
        markers[pk[:, 0], pk[:, 1]] = np.arange(1, len(pk) + 1, dtype=np.int32)
    return markers, len(pk)


def centre_watershed(fg_prob: Any, heatmap: Any, fg_threshold: float = 0.5, peak_threshold: float = 0.3,
                     min_distance: int = 3, min_size: int = 16, fill_holes: bool = True,
                     prominence: float = 0.2) -> np.ndarray:
    """Centre-seeded watershed of one 2D slice (see the module docstring); ``int32`` labels 1..N.

    Args:
        fg_prob: foreground probability ``(H, W)``.
        heatmap: centre heatmap ``(H, W)`` (peak ~1 at centres).
        fg_threshold: foreground cut.
        peak_threshold: minimum heatmap height of a marker.
        min_distance: half window of the plain peak detection (used when ``prominence <= 0``).
        min_size: instances smaller than this are dropped.
        fill_holes: fill holes of the foreground mask.
        prominence: minimum height of a centre above the saddle to its neighbours (see :func:`centre_markers`).
    """
    p = np.asarray(to_numpy(fg_prob), np.float32)
    h = np.asarray(to_numpy(heatmap), np.float32)
    if p.ndim != 2 or p.shape != h.shape:
        raise DataError(f"fg_prob and heatmap must be 2D maps of one shape, got {p.shape} and {h.shape}")
    check_finite(p, "fg_prob")
    check_finite(h, "heatmap")
    mask = _mask(p, fg_threshold, fill_holes)
    if not mask.any():
        return np.zeros(p.shape, np.int32)
    markers, _ = centre_markers(h, mask, peak_threshold, prominence, min_distance)
    markers = markers.astype(np.int32)
    comps, n_comp = ndimage.label(mask, ndimage.generate_binary_structure(2, 1))
    seed_orphans(markers, comps, n_comp)  # one marker per component without a peak
    inner = ndimage.distance_transform_edt(mask)
    # -heatmap splits touching objects at the valley between centres; the distance term breaks flat plateaus
    elevation = -h - 1e-3 * inner / (inner.max() + 1e-6)
    labels = watershed(elevation, markers, mask=mask)
    return remove_small_instances(labels, min_size)


def instance_scores(labels: np.ndarray, fg_prob: np.ndarray) -> dict[int, float]:
    """``{id: mean foreground probability over the instance}`` for every id > 0 (one ``bincount``)."""
    lab = np.asarray(labels).ravel().astype(np.int64)
    p = np.asarray(fg_prob, np.float64).ravel()
    if lab.size != p.size:
        raise DataError(f"labels ({lab.size} px) and fg_prob ({p.size} px) differ in size")
    pos = lab > 0
    if not pos.any():
        return {}
    cnt = np.bincount(lab[pos])
    tot = np.bincount(lab[pos], p[pos], minlength=cnt.size)
    ids = np.nonzero(cnt)[0]
    return {int(i): float(tot[i] / cnt[i]) for i in ids}


def link_slices(labels: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """3D instances from per-slice 2D instances ``(D, H, W)`` (ids may repeat across slices).

    Instance ``a`` of slice ``z`` and ``b`` of slice ``z + 1`` are linked when ``b`` is ``a``'s best-IoU partner,
    ``a`` is ``b``'s, and their IoU is >= ``min_iou`` (mutual best avoids merging a chain through a split); linked
    chains get one id. Returns ``int32`` labels 1..N.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise DataError(f"link_slices needs (D, H, W) labels, got shape {lab.shape}")
    depth = lab.shape[0]
    lab = np.where(lab > 0, lab, 0).astype(np.int64)
    per = lab.reshape(depth, -1).max(1)
    offset = np.concatenate([[0], np.cumsum(per)[:-1]])
    glob = np.where(lab > 0, lab + offset[:, None, None], 0)
    n = int(per.sum())
    if n == 0:
        return np.zeros(lab.shape, np.int32)
    area = np.bincount(glob.ravel(), minlength=n + 1)
    a, b = glob[:-1].ravel(), glob[1:].ravel()
    both = (a > 0) & (b > 0)
    edges_a = np.zeros(0, np.int64)
    edges_b = np.zeros(0, np.int64)
    if both.any():
        pairs, inter = np.unique(np.stack([a[both], b[both]], 1), axis=0, return_counts=True)
        pa, pb = pairs[:, 0], pairs[:, 1]
        iou = inter / (area[pa] + area[pb] - inter)
        best_a = np.zeros(n + 1)
        best_b = np.zeros(n + 1)
        np.maximum.at(best_a, pa, iou)
        np.maximum.at(best_b, pb, iou)
        keep = (iou >= min_iou) & (iou >= best_a[pa]) & (iou >= best_b[pb])
        edges_a, edges_b = pa[keep], pb[keep]
    graph = coo_matrix((np.ones(edges_a.size), (edges_a, edges_b)), shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    out = np.where(glob > 0, comp[glob] + 1, 0)
    return relabel_sequential(out)


def instances_from_maps(fg_prob: np.ndarray, heatmap: np.ndarray, method: str = "watershed", fg_threshold: float = 0.5,
                        peak_threshold: float = 0.3, min_distance: int = 3, min_size: int = 16,
                        link_iou: float = 0.3, prominence: float = 0.2) -> np.ndarray:
    """2D ``(H, W)`` or 3D ``(D, H, W)`` maps -> instances; 3D volumes are segmented slice by slice and then
    assembled by :func:`link_slices` (the 2D network's 3D protocol)."""
    p = np.asarray(fg_prob, np.float32)
    h = np.asarray(heatmap, np.float32)
    if method not in ("watershed", "cc"):
        raise ValueError(f"method must be 'watershed' or 'cc', got {method!r}")

    def one(ps: np.ndarray, hs: np.ndarray) -> np.ndarray:
        if method == "cc":
            return connected_instances(ps, fg_threshold, min_size)
        return centre_watershed(ps, hs, fg_threshold, peak_threshold, min_distance, min_size, prominence=prominence)

    if p.ndim == 2:
        return one(p, h)
    if p.ndim == 3:
        return link_slices(np.stack([one(p[z], h[z]) for z in range(p.shape[0])]), link_iou)  # per slice
    raise DataError(f"maps must be (H, W) or (D, H, W), got shape {p.shape}")


class EMInstancesd(MapTransform):
    """``d[key]`` = ``(3, [D,] H, W)`` (background prob, foreground prob, centre heatmap; from
    :class:`~monai_ext.engines.em.EMInferer`) -> ``(1, [D,] H, W)`` int32 instance tensor, and ``d[scores_key]``
    ``{id: mean foreground probability}``.

    Args:
        keys: prediction key.
        method: ``"watershed"`` (centre-seeded) or ``"cc"`` (connected components).
        fg_threshold, peak_threshold, min_distance, min_size, link_iou, prominence: see :func:`instances_from_maps`
            and :func:`centre_watershed`.
        softmax: the prediction holds raw network logits in channels 0-1 (softmax them first).
        scores_key: output key of the scores (``None``: none).
        prob_key: also keep the foreground probability under this key (``None``: no).
    """

    def __init__(self, keys: str = "pred", method: str = "watershed", fg_threshold: float = 0.5,
                 peak_threshold: float = 0.3, min_distance: int = 3, min_size: int = 16, link_iou: float = 0.3,
                 prominence: float = 0.2, softmax: bool = False, scores_key: str | None = "scores", prob_key: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.kw = {"method": method, "fg_threshold": float(fg_threshold), "peak_threshold": float(peak_threshold),
                   "min_distance": int(min_distance), "min_size": int(min_size), "link_iou": float(link_iou),
                   "prominence": float(prominence)}
        if method not in ("watershed", "cc"):
            raise ValueError(f"method must be 'watershed' or 'cc', got {method!r}")
        self.softmax = softmax
        self.scores_key, self.prob_key = scores_key, prob_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = np.asarray(to_numpy(d[key]), np.float32)
            if pred.ndim not in (3, 4) or pred.shape[0] < 3:
                raise DataError(f"{key!r} must be (3, [D,] H, W) = (bg, fg, heatmap), got shape {pred.shape}")
            if self.softmax:
                e = np.exp(pred[:2] - pred[:2].max(0, keepdims=True))
                fg = e[1] / e.sum(0)
            else:
                fg = pred[1]
            labels = instances_from_maps(fg, pred[2], **self.kw)
            d[key] = torch.as_tensor(labels[None].astype(np.int32))  # tensors: MONAI metrics call .detach()
            if self.scores_key:
                d[self.scores_key] = instance_scores(labels, fg)
            if self.prob_key:
                d[self.prob_key] = torch.as_tensor(fg[None])
        return d
