# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Point labels for CKS / LACSS: where they come from, how they are batched, and augmentation that moves them.

- :class:`PointsFromLabeld`: points = instance centroids (LIVECell protocol), with the instance id of each point.
- :class:`PointsFromNucleid`: points = blobs of a nuclei channel (A431 protocol; no annotation at all).
- :class:`PadPointsd`: pad a variable number of points to a fixed ``(max_points, 2)`` array with -1 and a validity
  mask, so images with different cell counts batch with the default collate.
- :class:`RandPointCropd`, :class:`RandPointFlipRotated`, :class:`RandPointZoomd`: spatial augmentation of the
  image, the optional label and the points together (the paper's rotation/flip/+-15 % resize protocol).
- :class:`RandPointJitterd`, :class:`RandPointDropd`: displaced / missing points (robustness experiments).
- :class:`SizePriord`: the per-dataset or per-class size prior ``d`` and the class index of each image.
- :class:`SelectMetad`: keep the meta fields that batch cleanly.

All array transforms work on NumPy ``(C, H, W)`` images and ``(N, 2)`` ``(y, x)`` points (pixel ``i`` is centred on
coordinate ``i``) and are vectorised. Every random transform is a MONAI ``Randomizable`` (seeded by
``set_random_state`` / the dataset's seeding).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

__all__ = [
    "label_centroids",
    "detect_nuclei_points",
    "PointsFromLabeld",
    "PointsFromNucleid",
    "PadPointsd",
    "RandPointCropd",
    "RandPointFlipRotated",
    "RandPointZoomd",
    "RandPointJitterd",
    "RandPointDropd",
    "SizePriord",
    "SelectMetad",
]

logger = logging.getLogger(__name__)


def label_centroids(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids ``(N, 2)`` (mean pixel coordinate, as LIVECell points) and ids ``(N,)`` of an instance map.

    Vectorised with ``bincount`` (one pass over the pixels).
    """
    lab = np.asarray(label)
    if lab.ndim == 3:
        lab = lab[0]
    flat = lab.ravel().astype(np.int64)
    if flat.size == 0 or flat.max() <= 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    if flat.min() < 0:
        flat = np.where(flat < 0, 0, flat)
    yy, xx = np.indices(lab.shape)
    cnt = np.bincount(flat)
    sy = np.bincount(flat, yy.ravel())
    sx = np.bincount(flat, xx.ravel())
    ids = np.nonzero(cnt)[0]
    ids = ids[ids > 0]
    pts = np.stack([sy[ids] / cnt[ids], sx[ids] / cnt[ids]], 1).astype(np.float32)
    return pts, ids.astype(np.int64)


def detect_nuclei_points(nuclei: np.ndarray, radius: float = 6.0, threshold: float = 0.12,
                         normalize: bool = True) -> np.ndarray:
    """Nucleus centres ``(N, 2)`` by blob detection (scale-normalised Laplacian of Gaussian + local maxima).

    Args:
        nuclei: 2D nuclei-stain image.
        radius: typical nucleus radius in pixels (LoG scale ``radius / sqrt(2)``; peaks at least ``radius`` apart).
        threshold: minimum LoG response, in units of the (normalised) image intensity.
        normalize: rescale the image to [0, 1] by its 0.5 / 99.5 percentiles first (robust to stain brightness).
    """
    from monai_ext.data.synthetic import detect_blobs

    img = np.asarray(nuclei, np.float32)
    if img.ndim != 2:
        raise DataError(f"nuclei image must be 2D, got shape {img.shape}")
    if normalize:
        lo, hi = np.percentile(img, (0.5, 99.5))
        img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return detect_blobs(img, sigma=radius / np.sqrt(2.0), threshold=threshold, min_distance=int(round(radius)))


# ------------------------------------------------------------------------------------------------ point sources
class PointsFromLabeld(MapTransform):
    """``points`` = instance centroids of ``label`` (+ ``point_ids``: the instance id of each point).

    Args:
        keys: the label key.
        points_key, ids_key: output keys.
        overwrite: replace existing points (default: only ids are added when points already exist and match the
            instance count, otherwise points are kept as given).
    """

    def __init__(self, keys: str = "label", points_key: str = "points", ids_key: str = "point_ids",
                 overwrite: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.points_key = points_key
        self.ids_key = ids_key
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if not self.overwrite and self.points_key in d:
                continue
            pts, ids = label_centroids(to_numpy(d[key]))
            d[self.points_key] = pts
            d[self.ids_key] = ids
        return d


class PointsFromNucleid(MapTransform):
    """``points`` from blob detection on a nuclei channel of ``image`` (fully unsupervised, A431-style).

    Args:
        keys: the image key.
        channel: index of the nuclei channel.
        drop_channel: remove the nuclei channel from the image afterwards (when the model should not see it).
        radius, threshold: see :func:`detect_nuclei_points`.
        points_key: output key.
    """

    def __init__(self, keys: str = "image", channel: int = -1, drop_channel: bool = False, radius: float = 6.0,
                 threshold: float = 0.12, points_key: str = "points", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channel = int(channel)
        self.drop_channel = drop_channel
        self.radius = float(radius)
        self.threshold = float(threshold)
        self.points_key = points_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = to_numpy(d[key])
            if img.ndim != 3 or not -img.shape[0] <= self.channel < img.shape[0]:
                raise DataError(f"{key!r} of shape {img.shape} has no channel {self.channel} to detect nuclei on")
            d[self.points_key] = detect_nuclei_points(img[self.channel], self.radius, self.threshold)
            if self.drop_channel:
                keep = [c for c in range(img.shape[0]) if c != self.channel % img.shape[0]]
                if not keep:
                    raise DataError("drop_channel would leave an image without channels")
                d[key] = np.ascontiguousarray(img[keep])
        return d


# ------------------------------------------------------------------------------------------------ batching
class PadPointsd(MapTransform):
    """Pad ``points`` ``(N, 2)`` to ``(max_points, 2)`` with -1 and add ``<key>_valid`` ``(max_points,)`` bool.

    Per-point companions (``point_ids``) are padded with -1 alike. More than ``max_points`` points: the first
    ``max_points`` are kept and a warning names the sample (raise ``max_points``; crops rarely get there).

    Args:
        keys: point keys.
        max_points: fixed length.
        companions: per-point arrays padded the same way.
    """

    def __init__(self, keys: str | Sequence[str] = "points", max_points: int = 1024,
                 companions: Sequence[str] = ("point_ids",), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.max_points = int(max_points)
        self.companions = tuple(companions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pts = np.asarray(to_numpy(d[key]), np.float32).reshape(-1, 2)
            n = pts.shape[0]
            if n > self.max_points:
                sid = d.get("meta", {}).get("id", "?") if isinstance(d.get("meta"), Mapping) else "?"
                logger.warning("sample %s has %d points, more than max_points=%d: the rest are ignored", sid, n,
                               self.max_points)
                n = self.max_points
            out = np.full((self.max_points, 2), -1.0, np.float32)
            out[:n] = pts[:n]
            valid = np.zeros(self.max_points, bool)
            valid[:n] = True
            d[key] = out
            d[f"{key}_valid"] = valid
            for comp in self.companions:
                if comp in d:
                    vals = np.asarray(to_numpy(d[comp])).reshape(-1)
                    padded = np.full(self.max_points, -1, np.int64)
                    padded[: min(n, vals.size)] = vals[:n]
                    d[comp] = padded
        return d


class SelectMetad(MapTransform):
    """Keep only ``fields`` of ``d[keys]`` (missing ones become ``""``) so meta dicts collate across samples."""

    def __init__(self, keys: str = "meta", fields: Sequence[str] = ("id", "dataset", "cell_line"),
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fields = tuple(fields)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = d[key] if isinstance(d[key], Mapping) else {}
            d[key] = {f: ("" if meta.get(f) is None else meta.get(f)) for f in self.fields}
        return d


class SizePriord(MapTransform):
    """Per-image size prior ``d`` (paper Eq. 4) and class index, from a per-class table.

    The class is read from ``d[meta_key][class_field]`` (e.g. the LIVECell cell line, taken from the file name by
    the reader). ``per_class`` maps class names to ``d`` (the paper's LIVECell grouping: 20 / 15 / 10 px for large /
    medium / small lines); unknown or absent classes get ``d``.

    Args:
        d: default prior size in pixels (A431: 20).
        per_class: ``{class name: d}``.
        classes: ordered class names for ``class_index`` (collaborator channel); default: sorted ``per_class`` keys.
        prior_key, class_index_key: output keys (float32 scalar, int64 scalar; unknown class -> 0).
    """

    def __init__(self, d: float = 20.0, per_class: Mapping[str, float] | None = None,
                 classes: Sequence[str] | None = None, meta_key: str = "meta", class_field: str = "cell_line",
                 prior_key: str = "prior_d", class_index_key: str = "class_index") -> None:
        super().__init__(meta_key, allow_missing_keys=True)
        if d <= 0:
            raise ValueError(f"the size prior d must be positive, got {d}")
        self.d = float(d)
        self.per_class = {str(k): float(v) for k, v in (per_class or {}).items()}
        if any(v <= 0 for v in self.per_class.values()):
            raise ValueError(f"every per-class d must be positive: {self.per_class}")
        self.classes = [str(c) for c in (classes if classes is not None else sorted(self.per_class))]
        self.meta_key = meta_key
        self.class_field = class_field
        self.prior_key = prior_key
        self.class_index_key = class_index_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        meta = d.get(self.meta_key)
        cls = str(meta.get(self.class_field) or "") if isinstance(meta, Mapping) else ""
        d[self.prior_key] = np.float32(self.per_class.get(cls, self.d))
        d[self.class_index_key] = np.int64(self.classes.index(cls) if cls in self.classes else 0)
        return d


# ------------------------------------------------------------------------------------------------ augmentation
def _points_in(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    return (pts[:, 0] >= -0.5) & (pts[:, 0] < h - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] < w - 0.5)


class _PointSpatial(Randomizable, MapTransform):
    """Base: ``keys`` are images/labels sharing one geometry; ``points_keys`` move with them; companions of the
    points (``point_ids``) are filtered alike when points leave the image."""

    def __init__(self, keys: Sequence[str], points_keys: Sequence[str], companions: Sequence[str],
                 label_keys: Sequence[str], allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.points_keys = tuple([points_keys] if isinstance(points_keys, str) else points_keys)
        self.companions = tuple(companions)
        self.label_keys = set([label_keys] if isinstance(label_keys, str) else label_keys)

    def _shape(self, d: Mapping[Hashable, Any]) -> tuple[int, int]:
        for key in self.key_iterator(d):
            return tuple(np.asarray(d[key]).shape[-2:])  # type: ignore[return-value]
        raise DataError(f"none of the keys {self.keys} is in the sample")

    def _filter_points(self, d: dict[Hashable, Any], h: int, w: int) -> None:
        for pk in self.points_keys:
            if pk not in d:
                continue
            pts = np.asarray(d[pk], np.float32).reshape(-1, 2)
            keep = _points_in(pts, h, w)
            d[pk] = pts[keep]
            for comp in self.companions:
                if comp in d and np.asarray(d[comp]).shape[:1] == keep.shape:
                    d[comp] = np.asarray(d[comp])[keep]


class RandPointCropd(_PointSpatial):
    """Random ``roi_size`` crop of images/labels (zero-padded when smaller) with the points shifted and filtered.

    Args:
        keys: image and label keys (same spatial size).
        roi_size: ``(h, w)`` of the crop.
        points_keys: point keys; companions: per-point arrays filtered with them.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), roi_size: Sequence[int] | int = 256,
                 points_keys: Sequence[str] = ("points",), companions: Sequence[str] = ("point_ids",),
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, points_keys, companions, (), allow_missing_keys)
        self.roi = (int(roi_size), int(roi_size)) if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
        self._start = (0, 0)

    def randomize(self, data: Any = None) -> None:
        h, w = data
        self._start = (int(self.R.randint(0, max(h - self.roi[0], 0) + 1)),
                       int(self.R.randint(0, max(w - self.roi[1], 0) + 1)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        h, w = self._shape(d)
        self.randomize((h, w))
        y0, x0 = self._start
        th, tw = self.roi
        for key in self.key_iterator(d):
            arr = np.asarray(to_numpy(d[key]))
            crop = arr[..., y0 : y0 + th, x0 : x0 + tw]
            ph, pw = th - crop.shape[-2], tw - crop.shape[-1]
            if ph > 0 or pw > 0:
                crop = np.pad(crop, [(0, 0)] * (crop.ndim - 2) + [(0, ph), (0, pw)])
            d[key] = np.ascontiguousarray(crop)
        for pk in self.points_keys:
            if pk in d:
                d[pk] = np.asarray(d[pk], np.float32).reshape(-1, 2) - np.array([y0, x0], np.float32)
        self._filter_points(d, min(th, h - y0), min(tw, w - x0))
        return d


class RandPointFlipRotated(_PointSpatial):
    """Random element of the dihedral group (flips + transpose = the paper's rotations/flips), points included.

    Args:
        prob: probability of applying a random (non-identity or identity) dihedral transform.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 1.0,
                 points_keys: Sequence[str] = ("points",), companions: Sequence[str] = ("point_ids",),
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, points_keys, companions, (), allow_missing_keys)
        self.prob = float(prob)
        self._op = (False, False, False)

    def randomize(self, data: Any = None) -> None:
        if self.R.rand() < self.prob:
            self._op = tuple(bool(v) for v in self.R.randint(0, 2, 3))  # (flip y, flip x, transpose)
        else:
            self._op = (False, False, False)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        fy, fx, tr = self._op
        h, w = self._shape(d)
        for key in self.key_iterator(d):
            arr = np.asarray(to_numpy(d[key]))
            if fy:
                arr = arr[..., ::-1, :]
            if fx:
                arr = arr[..., :, ::-1]
            if tr:
                arr = np.swapaxes(arr, -1, -2)
            d[key] = np.ascontiguousarray(arr)
        for pk in self.points_keys:
            if pk in d:
                p = np.asarray(d[pk], np.float32).reshape(-1, 2).copy()
                if fy:
                    p[:, 0] = h - 1 - p[:, 0]
                if fx:
                    p[:, 1] = w - 1 - p[:, 1]
                if tr:
                    p = p[:, ::-1].copy()
                d[pk] = p
        return d


class RandPointZoomd(_PointSpatial):
    """Random isotropic resize by a factor in ``[min_zoom, max_zoom]`` (paper: +-15 %), points scaled alike.

    Images are resampled bilinearly, ``label_keys`` with nearest neighbour (pixel-centre aligned).
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), min_zoom: float = 0.85, max_zoom: float = 1.15,
                 prob: float = 1.0, label_keys: Sequence[str] = ("label",), points_keys: Sequence[str] = ("points",),
                 companions: Sequence[str] = ("point_ids",), allow_missing_keys: bool = True) -> None:
        super().__init__(keys, points_keys, companions, label_keys, allow_missing_keys)
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.min_zoom, self.max_zoom, self.prob = float(min_zoom), float(max_zoom), float(prob)
        self._f = 1.0

    def randomize(self, data: Any = None) -> None:
        self._f = float(self.R.uniform(self.min_zoom, self.max_zoom)) if self.R.rand() < self.prob else 1.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import torch
        import torch.nn.functional as F

        d = dict(data)
        self.randomize()
        f = self._f
        if f == 1.0:
            return d
        h, w = self._shape(d)
        nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
        for key in self.key_iterator(d):
            arr = np.asarray(to_numpy(d[key]))
            t = torch.from_numpy(np.ascontiguousarray(arr)).reshape(-1, 1, h, w)
            if key in self.label_keys:
                out = F.interpolate(t.float(), size=(nh, nw), mode="nearest-exact").to(t.dtype)
            else:
                out = F.interpolate(t.float(), size=(nh, nw), mode="bilinear", align_corners=False)
            d[key] = out.reshape(*arr.shape[:-2], nh, nw).numpy().astype(arr.dtype)
        sy, sx = nh / h, nw / w
        for pk in self.points_keys:
            if pk in d:
                p = np.asarray(d[pk], np.float32).reshape(-1, 2)
                d[pk] = np.stack([(p[:, 0] + 0.5) * sy - 0.5, (p[:, 1] + 0.5) * sx - 0.5], 1).astype(np.float32)
        self._filter_points(d, nh, nw)
        return d


class RandPointJitterd(Randomizable, MapTransform):
    """Displace every point by Gaussian noise of ``sigma`` pixels (inexact point labels)."""

    def __init__(self, keys: str | Sequence[str] = "points", sigma: float = 2.0, allow_missing_keys: bool = True) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.sigma = float(sigma)

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            p = np.asarray(d[key], np.float32).reshape(-1, 2)
            d[key] = (p + self.R.normal(0.0, self.sigma, p.shape)).astype(np.float32)
        return d


class RandPointDropd(Randomizable, MapTransform):
    """Drop each point with probability ``prob`` (missing point labels); companions are dropped alike."""

    def __init__(self, keys: str | Sequence[str] = "points", prob: float = 0.1,
                 companions: Sequence[str] = ("point_ids",), allow_missing_keys: bool = True) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.prob = float(prob)
        self.companions = tuple(companions)

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            p = np.asarray(d[key], np.float32).reshape(-1, 2)
            keep = self.R.rand(p.shape[0]) >= self.prob
            d[key] = p[keep]
            for comp in self.companions:
                if comp in d and np.asarray(d[comp]).shape[:1] == keep.shape:
                    d[comp] = np.asarray(d[comp])[keep]
        return d
