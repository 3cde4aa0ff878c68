# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""EM transforms: points -> Gaussian centre heatmaps, ignore zones around points, instance labels -> training
targets (segmentation + heatmap), and random slices of volumes.

Conventions: heatmaps are ``float32`` with a peak of ``peak`` (1.0 by default; the paper's code uses 255) at each
centre, built by Gaussian-filtering a map of deltas (one ``scipy.ndimage.gaussian_filter`` call for all points, so
overlapping Gaussians add up as in the authors' code); the sum of one peak is :func:`kernel_sum`, so the number of
objects in a heatmap is ``heatmap.sum() / kernel_sum`` (the paper's count estimate). Segmentation targets are
``uint8`` with 0 = background, 1 = mitochondrion, 255 = ignore. Points are ``(N, 2)`` ``(y, x)`` (``(N, 3)``
``(z, y, x)`` for volumes; each slice then gets its own 2D Gaussians).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

__all__ = [
    "IGNORE_INDEX",
    "kernel_sum",
    "points_to_heatmap",
    "point_zone",
    "instance_centres",
    "instance_targets",
    "PointsToHeatmapd",
    "InstanceTargetsEMd",
    "RandSliced",
]

#: class value of ignored pixels in segmentation targets (CONVENTIONS.md).
IGNORE_INDEX = 255


def _sigmas(sigma: float, ndim: int) -> tuple[float, ...]:
    return (0.0,) * (ndim - 2) + (float(sigma), float(sigma))


def kernel_sum(sigma: float, peak: float = 1.0) -> float:
    """Sum of one rendered Gaussian of height ``peak`` (the count normaliser: ``count = heatmap.sum() / kernel_sum``)."""
    if sigma <= 0:
        return float(peak)
    r = int(np.ceil(4 * sigma))
    delta = np.zeros((2 * r + 1, 2 * r + 1), np.float64)
    delta[r, r] = 1.0
    g = ndimage.gaussian_filter(delta, sigma, mode="constant", truncate=4.0)
    return float(peak * g.sum() / g[r, r])


def _point_indices(points: Any, shape: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Rounded integer indices of the points that fall inside ``shape`` (one array per axis)."""
    pts = np.asarray(to_numpy(points), np.float64).reshape(-1, len(shape)) if np.size(points) else np.zeros((0, len(shape)))
    if not np.all(np.isfinite(pts)):
        raise DataError("points contain NaN or inf")
    idx = np.rint(pts).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(shape)[None]), axis=1)
    return tuple(idx[inside].T)


def points_to_heatmap(points: Any, shape: Sequence[int], sigma: float = 4.0, peak: float = 1.0) -> np.ndarray:
    """Gaussian heatmap of ``points`` on a ``shape`` grid (2D ``(H, W)`` or per slice of ``(D, H, W)``).

    Each point adds a Gaussian of std ``sigma`` px and height ``peak`` (points outside the grid are dropped);
    overlapping Gaussians add up.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise DataError(f"heatmap shape must be (H, W) or (D, H, W), got {shape}")
    delta = np.zeros(shape, np.float32)
    idx = _point_indices(points, shape)
    if idx[0].size == 0:
        return delta
    np.add.at(delta, idx, 1.0)
    if sigma <= 0:
        return delta * np.float32(peak)
    out = ndimage.gaussian_filter(delta, _sigmas(sigma, len(shape)), mode="constant", truncate=4.0)
    centre = ndimage.gaussian_filter(_unit_delta(sigma), sigma, mode="constant", truncate=4.0).max()
    return (out * np.float32(peak / centre)).astype(np.float32)


def _unit_delta(sigma: float) -> np.ndarray:
    r = int(np.ceil(4 * sigma))
    d = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    d[r, r] = 1.0
    return d


def point_zone(points: Any, shape: Sequence[int], radius: float | Sequence[float]) -> np.ndarray:
    """``bool`` mask of the pixels within an ellipse of ``radius`` (``r`` or ``(r_y, r_x)``) px of any point.

    One Euclidean distance transform for all points (volumes: per slice, in-plane). Used for prior shapes around
    points no prediction covers, for ignore zones, and for the background exclusion of the detection loss.
    """
    shape = tuple(int(s) for s in shape)
    r = (float(radius), float(radius)) if np.isscalar(radius) else tuple(float(v) for v in radius)  # type: ignore[arg-type]
    if len(r) != 2 or min(r) < 0:
        raise ValueError(f"radius must be r or (r_y, r_x) >= 0, got {radius}")
    seeds = np.ones(shape, bool)
    idx = _point_indices(points, shape)
    if idx[0].size == 0:
        return np.zeros(shape, bool)
    seeds[idx] = False
    sampling = (1e6,) * (len(shape) - 2) + (1.0 / max(r[0], 1e-6), 1.0 / max(r[1], 1e-6))
    dist = ndimage.distance_transform_edt(seeds, sampling=sampling)
    return dist <= 1.0


def instance_centres(label: np.ndarray, mode: str = "centroid") -> np.ndarray:
    """Centres ``(N, 2)`` (y, x) of the instances of a 2D label map (ids > 0), or per slice ``(N, 3)`` for 3D.

    ``mode="centroid"`` (paper: Gaussians at component centroids; one ``bincount`` pass) or ``"inside"`` (the pixel
    farthest from the instance border, always inside bent objects; one distance transform + ``maximum`` per id).
    """
    lab = np.asarray(label)
    if lab.ndim == 3:
        parts = [instance_centres(lab[z], mode) for z in range(lab.shape[0])]  # per slice (few dozen)
        return np.concatenate([np.concatenate([np.full((len(p), 1), z, np.float32), p], 1) for z, p in enumerate(parts)]) \
            if parts else np.zeros((0, 3), np.float32)
    flat = np.where(lab > 0, lab, 0).astype(np.int64).ravel()
    if flat.size == 0 or flat.max() == 0:
        return np.zeros((0, 2), np.float32)
    cnt = np.bincount(flat)
    ids = np.nonzero(cnt)[0]
    ids = ids[ids > 0]
    if mode == "centroid":
        yy, xx = np.indices(lab.shape)
        sy = np.bincount(flat, yy.ravel())
        sx = np.bincount(flat, xx.ravel())
        return np.stack([sy[ids] / cnt[ids], sx[ids] / cnt[ids]], 1).astype(np.float32)
    if mode == "inside":
        pos = lab > 0
        dist = ndimage.distance_transform_edt(np.pad(pos, 1))[1:-1, 1:-1]
        # the first pixel of maximal distance per id: sort by (id, -dist) and take group heads
        order = np.lexsort((-dist.ravel(), flat))
        f_sorted = flat[order]
        head = np.r_[True, f_sorted[1:] != f_sorted[:-1]] & (f_sorted > 0)
        best = order[head]
        return np.stack(np.unravel_index(best, lab.shape), 1).astype(np.float32)
    raise ValueError(f"mode must be 'centroid' or 'inside', got {mode!r}")


def instance_targets(label: np.ndarray, sigma: float = 4.0, peak: float = 1.0, centre: str = "centroid"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full supervision from an instance map ``(H, W)``: ``seg`` (uint8 0/1, 255 where label < 0), the centre
    heatmap ``det`` and the detection weight map ``det_weight`` (1 everywhere, 0 on ignored pixels)."""
    lab = np.asarray(label)
    seg = (lab > 0).astype(np.uint8)
    seg[lab < 0] = IGNORE_INDEX
    det = points_to_heatmap(instance_centres(lab, centre), lab.shape, sigma, peak)
    weight = (lab >= 0).astype(np.float32)
    return seg, det, weight


def _spatial_of(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    return a[0] if a.ndim >= 3 and a.shape[0] == 1 else a


class PointsToHeatmapd(MapTransform):
    """``d[heatmap_key]`` = Gaussian heatmap ``(1, [D,] H, W)`` of ``d[keys]`` points on the grid of ``d[ref_key]``.

    Args:
        keys: point key(s) (``(N, 2)`` or ``(N, 3)``; absent or empty -> an all-zero map).
        ref_key: image whose spatial shape the heatmap takes.
        heatmap_key: output key.
        sigma, peak: Gaussian std (px) and height.
    """

    def __init__(self, keys: str = "points", ref_key: str = "image", heatmap_key: str = "det", sigma: float = 4.0,
                 peak: float = 1.0, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key, self.heatmap_key = ref_key, heatmap_key
        self.sigma, self.peak = float(sigma), float(peak)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shape = np.asarray(to_numpy(d[self.ref_key])).shape[1:]
        pts = np.zeros((0, len(shape)), np.float32)
        for key in self.key_iterator(d):
            pts = np.asarray(to_numpy(d[key]), np.float32).reshape(-1, len(shape))
        d[self.heatmap_key] = points_to_heatmap(pts, shape, self.sigma, self.peak)[None]
        return d


class InstanceTargetsEMd(MapTransform):
    """Instance label ``(1, H, W)`` -> ``seg`` ``(1, H, W)`` uint8, ``det`` heatmap and ``det_weight`` (float32).

    The source domain's (and the supervised upper bound's) targets; computed before cropping so that centres
    are those of whole objects.

    Args:
        keys: the instance label key.
        seg_key, det_key, weight_key: output keys.
        sigma, peak: heatmap Gaussian.
        centre: ``"centroid"`` or ``"inside"`` (see :func:`instance_centres`).
    """

    def __init__(self, keys: str = "label", seg_key: str = "seg", det_key: str = "det", weight_key: str = "det_weight",
                 sigma: float = 4.0, peak: float = 1.0, centre: str = "centroid", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.seg_key, self.det_key, self.weight_key = seg_key, det_key, weight_key
        self.sigma, self.peak, self.centre = float(sigma), float(peak), centre

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = np.asarray(to_numpy(d[key]))
            if lab.ndim != 3 or lab.shape[0] != 1:
                raise DataError(f"{key!r} must be a (1, H, W) instance map, got shape {lab.shape}")
            seg, det, weight = instance_targets(lab[0], self.sigma, self.peak, self.centre)
            d[self.seg_key], d[self.det_key], d[self.weight_key] = seg[None], det[None], weight[None]
        return d


class RandSliced(Randomizable, MapTransform):
    """Pick one random z slice of a volume sample: ``(C, D, H, W)`` arrays -> ``(C, H, W)``, ``(N, 3)`` points ->
    the ``(y, x)`` of the points on that slice (rounded z).

    Lets 3D readers (volumes / patches) feed the 2D training pipeline. With ``with_points_only`` the slice is drawn
    among those holding at least one point (when any).

    Args:
        keys: volume keys (same depth).
        points_keys: point keys moved to 2D.
        with_points_only: prefer slices with points.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), points_keys: Sequence[str] = ("points",),
                 with_points_only: bool = False, allow_missing_keys: bool = True) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.points_keys = tuple([points_keys] if isinstance(points_keys, str) else points_keys)
        self.with_points_only = with_points_only
        self._z = 0

    def randomize(self, data: Any = None) -> None:
        depth, candidates = data
        self._z = int(self.R.choice(candidates)) if len(candidates) else int(self.R.randint(0, depth))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        depth = None
        for key in self.key_iterator(d):
            arr = np.asarray(to_numpy(d[key]))
            if arr.ndim != 4:
                raise DataError(f"{key!r} must be a (C, D, H, W) volume to sample slices from, got shape {arr.shape}")
            if depth is not None and arr.shape[1] != depth:
                raise DataError(f"volumes differ in depth ({depth} vs {arr.shape[1]})")
            depth = arr.shape[1]
        if depth is None:
            raise DataError(f"none of {self.keys} is in the sample")
        zs = np.zeros(0, np.int64)
        if self.with_points_only:
            parts = [np.rint(np.asarray(d[k], np.float32).reshape(-1, 3)[:, 0]) for k in self.points_keys if k in d]
            zs = np.unique(np.concatenate(parts)).astype(np.int64) if parts else zs
            zs = zs[(zs >= 0) & (zs < depth)]
        self.randomize((depth, zs))
        for key in self.key_iterator(d):
            d[key] = np.ascontiguousarray(np.asarray(to_numpy(d[key]))[:, self._z])
        for key in self.points_keys:
            if key in d:
                pts = np.asarray(to_numpy(d[key]), np.float32).reshape(-1, 3)
                d[key] = pts[np.rint(pts[:, 0]) == self._z, 1:].copy()
        return d
