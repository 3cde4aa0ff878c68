# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Building blocks shared by the synthetic generators: seeding, noise fields, star-convex shapes, label clean-up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "SeedLike",
    "as_rng",
    "seed_of",
    "smooth_noise",
    "fibre_texture",
    "StarShape",
    "random_star",
    "shape_field",
    "bbox_slices",
    "keep_largest_parts",
    "relabel_sequential",
    "sample_dict",
    "inside_points",
]

SeedLike = int | np.integer | np.random.Generator | np.random.SeedSequence | None


def as_rng(seed: SeedLike) -> np.random.Generator:
    """A NumPy ``Generator`` from an int / ``SeedSequence`` / ``Generator`` (passed through) / ``None``."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def seed_of(seed: SeedLike) -> int | None:
    """An int to record in ``meta["seed"]`` (``None`` for a Generator, whose seed is unknown)."""
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    if isinstance(seed, np.random.SeedSequence):
        return int(seed.entropy) if isinstance(seed.entropy, int) else None
    return None


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float], normalise: bool = True
) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit std (``normalise``), float32.

    Large sigmas are computed on a coarser grid and zoomed back, so the cost stays ~ one small filter.
    """
    shape = tuple(int(s) for s in shape)
    sig = np.broadcast_to(np.asarray(sigma, np.float64), (len(shape),))
    step = np.maximum(1, np.floor(sig / 3.0)).astype(int)  # keep >= 3 samples per sigma on the coarse grid
    coarse = tuple(int(np.ceil(s / k)) + 2 for s, k in zip(shape, step))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sig / step, mode="wrap")
    for ax, k in enumerate(step.tolist()):  # separable linear up-sampling of the coarse grid
        if k > 1:
            pos = np.arange(shape[ax], dtype=np.float32) / k
            i0 = np.floor(pos).astype(np.int64)
            wt = (pos - i0).reshape((-1,) + (1,) * (len(shape) - ax - 1))
            field = np.take(field, i0, axis=ax) * (1 - wt) + np.take(field, i0 + 1, axis=ax) * wt
    field = field[tuple(slice(0, s) for s in shape)]
    if normalise:
        field = (field - field.mean()) / (field.std() + 1e-8)
    return field.astype(np.float32)


def fibre_texture(
    rng: np.random.Generator,
    shape: Sequence[int],
    angle: float,
    along: float = 10.0,
    across: float = 1.2,
    wave: float = 6.0,
    wave_sigma: float = 20.0,
) -> np.ndarray:
    """Wavy fibre-like texture (2D, zero mean, unit std): noise smoothed ``along`` / ``across`` a direction.

    Noise is filtered anisotropically on a rotated grid and sampled along coordinates displaced by a smooth field
    (``wave`` px), so fibres run roughly along ``angle`` (radians) and bend.
    """
    H, W = int(shape[0]), int(shape[1])
    n = int(np.ceil(np.hypot(H, W) + 2 * wave + 8))
    base = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), (across, along), mode="wrap")
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    yy -= H / 2.0
    xx -= W / 2.0
    c, s = np.cos(angle), np.sin(angle)
    u = xx * c + yy * s + n / 2.0
    v = -xx * s + yy * c + n / 2.0 + wave * smooth_noise(rng, (H, W), wave_sigma)
    out = ndimage.map_coordinates(base, [v, u], order=1, mode="wrap")
    return ((out - out.mean()) / (out.std() + 1e-8)).astype(np.float32)


class StarShape:
    """A star-convex 2D shape: a rotated ellipse whose radius is modulated by low-order harmonics.

    ``r(theta) = ellipse(a, b)(theta) * (1 + sum_k amp_k cos(k theta + phase_k))``, in the frame rotated by ``angle``.
    The teardrop term ``tear`` (>0) widens the shape on the +u side and narrows it on the -u side.
    """

    __slots__ = ("cy", "cx", "a", "b", "angle", "amps", "phases", "tear")

    def __init__(
        self,
        cy: float,
        cx: float,
        a: float,
        b: float,
        angle: float = 0.0,
        amps: np.ndarray | None = None,
        phases: np.ndarray | None = None,
        tear: float = 0.0,
    ) -> None:
        self.cy, self.cx, self.a, self.b, self.angle = float(cy), float(cx), float(a), float(b), float(angle)
        self.amps = np.zeros(0) if amps is None else np.asarray(amps, np.float64)
        self.phases = np.zeros_like(self.amps) if phases is None else np.asarray(phases, np.float64)
        self.tear = float(tear)

    @property
    def extent(self) -> float:
        """A radius that bounds the shape."""
        return max(self.a, self.b) * (1.0 + float(np.abs(self.amps).sum()) + abs(self.tear)) + 1.5

    def area(self) -> float:
        return float(np.pi * self.a * self.b)


def random_star(
    rng: np.random.Generator,
    cy: float,
    cx: float,
    radius: float,
    aspect: float = 1.0,
    wobble: float = 0.05,
    n_harmonics: int = 3,
    angle: float | None = None,
    tear: float = 0.0,
) -> StarShape:
    """A random :class:`StarShape` of mean radius ``radius`` (area-preserving aspect ratio ``aspect`` >= 1)."""
    a = radius * np.sqrt(aspect)
    b = radius / np.sqrt(aspect)
    amps = wobble * rng.uniform(0.3, 1.0, n_harmonics) / np.arange(1, n_harmonics + 1) ** 0.5
    phases = rng.uniform(0, 2 * np.pi, n_harmonics)
    ang = rng.uniform(0, np.pi) if angle is None else angle
    return StarShape(cy, cx, a, b, ang, amps, phases, tear)


def bbox_slices(cy: float, cx: float, ext: float, shape: Sequence[int]) -> tuple[slice, slice] | None:
    """The clipped bounding box ``(rows, cols)`` of a disc of radius ``ext`` (``None`` if outside the image)."""
    y0, y1 = max(0, int(np.floor(cy - ext))), min(int(shape[0]), int(np.ceil(cy + ext)) + 1)
    x0, x1 = max(0, int(np.floor(cx - ext))), min(int(shape[1]), int(np.ceil(cx + ext)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def shape_field(s: StarShape, sl: tuple[slice, slice]) -> dict[str, np.ndarray]:
    """Evaluate ``s`` on the pixel grid of the box ``sl``.

    Returns ``q`` (normalised radius, < 1 inside), ``alpha`` (anti-aliased coverage in [0, 1]), ``u``/``v``
    (coordinates along / across the major axis, in pixels) and ``r`` (the boundary radius along each pixel's ray).
    """
    yy, xx = np.mgrid[sl[0], sl[1]].astype(np.float32)
    dy, dx = yy - s.cy, xx - s.cx
    c, si = np.cos(s.angle), np.sin(s.angle)
    u = dx * c + dy * si
    v = -dx * si + dy * c
    rho = np.hypot(u, v)
    th = np.arctan2(v, u)
    r = s.a * s.b / np.sqrt((s.b * np.cos(th)) ** 2 + (s.a * np.sin(th)) ** 2)
    if s.amps.size:
        k = np.arange(2, 2 + s.amps.size, dtype=np.float32)
        r = r * (1.0 + np.tensordot(s.amps, np.cos(k[:, None, None] * th[None] + s.phases[:, None, None]), 1))
    if s.tear:
        r = r * (1.0 + s.tear * np.cos(th))
    r = np.maximum(r, 0.5).astype(np.float32)
    alpha = np.clip(r - rho + 0.5, 0.0, 1.0)
    return {"q": rho / r, "alpha": alpha, "u": u, "v": v, "r": r}


def keep_largest_parts(label: np.ndarray, min_size: int = 1, connectivity: int = 1) -> np.ndarray:
    """Keep, for every id, only its largest connected part (and drop ids smaller than ``min_size`` pixels).

    Pieces that an occluding object cut off are set to 0. Vectorised: one connected-components pass over the whole
    map (different ids never join) and bincounts.
    """
    from skimage.measure import label as cc_label

    lab = np.asarray(label)
    if not lab.any():
        return lab.copy()
    cc = cc_label(lab, background=0, connectivity=connectivity)
    sizes = np.bincount(cc.ravel())
    sizes[0] = 0
    owner = np.zeros(sizes.size, np.int64)
    owner[cc.ravel()] = lab.ravel()
    # for each owner id, the component with the most pixels wins
    order = np.lexsort((-sizes, owner))
    first = np.ones(order.size, bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    keep = np.zeros(sizes.size, bool)
    keep[order[first]] = True
    keep &= sizes >= min_size
    keep[0] = False
    return np.where(keep[cc], lab, 0).astype(lab.dtype)


def relabel_sequential(label: np.ndarray) -> np.ndarray:
    """Ids 1..N in order of first appearance in raster order (int32)."""
    from skimage.segmentation import relabel_sequential as _rs

    return _rs(np.asarray(label).astype(np.int32))[0].astype(np.int32)


def sample_dict(
    image: np.ndarray, label: np.ndarray | None, meta: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """Assemble a loaded-sample dict (CONVENTIONS.md): float32 image in [0, 1], int32 label with a channel axis."""
    out: dict[str, Any] = {"image": np.clip(np.asarray(image, np.float32), 0.0, 1.0)}
    if label is not None:
        out["label"] = np.asarray(label, np.int32)[None]
    out.update(extra)
    out["meta"] = meta
    return out


def inside_points(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, points)``: one point per instance, its centroid, or the most interior pixel when the centroid falls
    outside (bent / non-convex shapes)."""
    lab = np.asarray(label)
    ids = np.unique(lab[lab > 0])
    if ids.size == 0:
        return ids, np.zeros((0, lab.ndim), np.float32)
    cents = np.asarray(ndimage.center_of_mass(np.ones(lab.shape, np.float32), lab, ids), np.float64)
    cents = cents.reshape(-1, lab.ndim)
    idx = tuple(np.clip(np.rint(cents[:, d]).astype(int), 0, lab.shape[d] - 1) for d in range(lab.ndim))
    bad = lab[idx] != ids
    if bad.any():
        edt = ndimage.distance_transform_edt(np.pad(lab, 1) > 0)[(slice(1, -1),) * lab.ndim]
        # interior of each instance only: distance to another id or background
        inner = ndimage.distance_transform_edt(_same_as_neighbours(lab))
        pos = ndimage.maximum_position(np.minimum(edt, inner), lab, ids[bad])
        cents[bad] = np.asarray(pos, np.float64).reshape(-1, lab.ndim)
    return ids, cents.astype(np.float32)


def _same_as_neighbours(lab: np.ndarray) -> np.ndarray:
    """True where all axis-neighbours carry the same id (not a border pixel)."""
    ok = np.ones(lab.shape, bool)
    for ax in range(lab.ndim):
        d = np.diff(lab, axis=ax) != 0
        pad_lo = [(0, 0)] * lab.ndim
        pad_hi = [(0, 0)] * lab.ndim
        pad_lo[ax] = (1, 0)
        pad_hi[ax] = (0, 1)
        ok &= ~np.pad(d, pad_lo) & ~np.pad(d, pad_hi)
    return ok
