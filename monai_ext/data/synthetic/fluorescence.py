# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Fluorescence cells (A431 / LIVECell-like) with a cytoplasm channel, a nuclei channel and blob-detected points.

Cells are star-convex shapes with lobes (non-convex); where two cells compete for a pixel the one with the smaller
normalised radius wins, which gives colonies of touching cells with a shared border. The cytoplasm channel has
per-cell brightness (some cells are dim, i.e. low contrast), a darker nucleus, granular texture, a thin darker gap
between touching cells (so borders are learnable), uneven illumination, blur and shot noise. The nuclei channel has
one bright nucleus per cell (some very dim, some cells with two nuclei) and a few bright debris specks. Points are
found like in the A431 data: blob detection (Laplacian of Gaussian + local maxima) on the nuclei channel, NOT the
ground-truth centroids, so some cells lack a point, some have two and points sit on the nucleus, off the cell
centroid. The centroids are returned separately as ``gt_points``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._common import (
    SeedLike,
    as_rng,
    bbox_slices,
    keep_largest_parts,
    random_star,
    relabel_sequential,
    sample_dict,
    seed_of,
    shape_field,
    smooth_noise,
)

__all__ = ["synth_fluorescence", "FLUO_DEFAULTS", "detect_blobs", "instance_centroids"]

#: Difficulty knobs of :func:`synth_fluorescence` and their defaults (sizes in pixels at ``scale=1``).
FLUO_DEFAULTS: dict[str, Any] = {
    "radius": (13.0, 22.0),  # cell radius range (px)
    "density": 0.55,  # target fraction of the tile covered by cells
    "colonies": 0.75,  # probability that a cell is placed touching an existing one (colonies); else anywhere
    "lobes": 0.22,  # amplitude of the shape harmonics (0 = ellipses; 0.3 = strongly non-convex)
    "dim_fraction": 0.15,  # fraction of low-contrast cells
    "contrast": (0.3, 0.7),  # cytoplasm brightness range of normal cells (background ~0.06)
    "dim_contrast": (0.1, 0.18),  # brightness range of dim cells
    "border": 0.5,  # relative darkening of the 1-px border between touching cells (0 = invisible borders)
    "texture": 0.15,  # granular texture amplitude (relative)
    "illumination": 0.25,  # amplitude of the smooth illumination field (relative)
    "blur": 1.0,  # Gaussian blur sigma (px)
    "noise": 0.02,  # Gaussian read noise std; shot noise is added on top (``photons``)
    "photons": 400.0,  # photons at intensity 1 (lower = noisier)
    "missing_nuclei": 0.05,  # fraction of cells whose nucleus is too dim to be detected
    "binucleated": 0.05,  # fraction of cells with two nuclei (two points)
    "nuclei_debris": 4,  # bright specks in the nuclei channel (spurious points)
    "point_threshold": 0.12,  # absolute LoG response threshold of the blob detector
    "scale": 1.0,  # size multiplier
}


def detect_blobs(
    image: np.ndarray, sigma: float, threshold: float = 0.1, min_distance: int | None = None
) -> np.ndarray:
    """Blob centres ``(N, 2)`` float32 (y, x): local maxima of the scale-normalised negative LoG response.

    Args:
        image: 2D intensity image (e.g. a nuclei channel).
        sigma: blob scale (~ radius / sqrt(2)).
        threshold: minimum response (image units).
        min_distance: minimum distance between peaks (default ``sigma``).
    """
    from skimage.feature import peak_local_max

    img = np.asarray(image, np.float32)
    resp = -(sigma**2) * ndimage.gaussian_laplace(img, sigma)
    md = max(1, int(round(sigma if min_distance is None else min_distance)))
    pk = peak_local_max(resp, min_distance=md, threshold_abs=threshold, exclude_border=False)
    return pk.astype(np.float32).reshape(-1, 2)


def instance_centroids(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, centroids)``: the sorted non-zero ids and their mean pixel coordinates ``(N, ndim)`` float32."""
    lab = np.asarray(label)
    ids = np.unique(lab[lab > 0])
    if ids.size == 0:
        return ids, np.zeros((0, lab.ndim), np.float32)
    cents = ndimage.center_of_mass(np.ones(lab.shape, np.float32), lab, ids)
    return ids, np.asarray(cents, np.float32).reshape(-1, lab.ndim)


def synth_fluorescence(
    seed: SeedLike = 0, shape: tuple[int, int] = (256, 256), channels: str = "cyto", **difficulty: Any
) -> dict[str, Any]:
    """One fluorescence tile: cytoplasm channel, nuclei channel, cell instances and blob-detected points.

    Args:
        seed: int, ``SeedSequence`` or ``Generator``.
        shape: ``(H, W)``.
        channels: ``"cyto"``: ``image`` is the cytoplasm channel ``(1, H, W)`` and ``nuclei`` a separate
            ``(1, H, W)``; ``"both"``: ``image`` is ``(2, H, W)`` = (cytoplasm, nuclei) and ``nuclei`` is also given.
        **difficulty: knobs of :data:`FLUO_DEFAULTS` (e.g. ``lobes``, ``dim_fraction``, ``border``,
            ``missing_nuclei``).

    Returns:
        ``{"image", "nuclei": (1, H, W) float32, "label": (1, H, W) int32 cells 1..N, "nuclei_label": (1, H, W) int32
        (nucleus pixels carry their cell's id), "points": (P, 2) float32 (y, x) from blob detection on the nuclei
        channel, "gt_points": (N, 2) float32 cell centroids in id order, "meta"}``.
    """
    unknown = set(difficulty) - set(FLUO_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown fluorescence difficulty knobs {sorted(unknown)}; known: {sorted(FLUO_DEFAULTS)}")
    if channels not in ("cyto", "both"):
        raise ValueError(f"channels must be 'cyto' or 'both', got {channels!r}")
    k = {**FLUO_DEFAULTS, **difficulty}
    rng = as_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    sc = float(k["scale"])
    lo, hi = (float(v) * sc for v in k["radius"])

    # ---- cells: star shapes competing for pixels (min normalised radius wins)
    best_q = np.full((H, W), np.inf, np.float32)
    label = np.zeros((H, W), np.int32)
    cells: list[tuple[float, float, float]] = []
    covered_target = k["density"] * H * W
    approx_area = 0.0
    attempts, max_attempts = 0, 400
    while approx_area < covered_target and attempts < max_attempts:
        attempts += 1
        r = rng.uniform(lo, hi)
        if cells and rng.random() < k["colonies"]:
            ay, ax, ar = cells[rng.integers(len(cells))]
            t = rng.uniform(0, 2 * np.pi)
            d = (ar + r) * rng.uniform(0.75, 0.95)
            cy, cx = ay + d * np.sin(t), ax + d * np.cos(t)
        else:
            cy, cx = rng.uniform(-0.1 * H, 1.1 * H), rng.uniform(-0.1 * W, 1.1 * W)
        if cells:
            c = np.asarray(cells)
            dist = np.hypot(c[:, 0] - cy, c[:, 1] - cx)
            if np.any(dist < 0.64 * (c[:, 2] + r)):  # centres too close: one cell would swallow the other
                continue
        star = random_star(rng, cy, cx, r, rng.uniform(1.0, 1.8), k["lobes"], n_harmonics=4)
        sl = bbox_slices(cy, cx, star.extent, (H, W))
        if sl is None:
            continue
        q = shape_field(star, sl)["q"]
        better = q < np.minimum(best_q[sl], 1.0)
        if better.sum() < 0.3 * np.pi * r * r * max(0.2, _inside_fraction(cy, cx, r, H, W)):
            continue
        cells.append((cy, cx, r))
        best_q[sl] = np.where(better, q, best_q[sl])
        label[sl] = np.where(better, len(cells), label[sl])
        approx_area = float((label > 0).sum())
    label = keep_largest_parts(label, min_size=int(0.15 * np.pi * lo * lo))
    label = relabel_sequential(label)
    n = int(label.max())

    # ---- per-cell appearance (lookup tables indexed by id; vectorised rendering)
    dim = rng.random(n + 1) < k["dim_fraction"]
    bright = np.where(dim, rng.uniform(*k["dim_contrast"], n + 1), rng.uniform(*k["contrast"], n + 1))
    bright[0] = 0.0
    ids, cents = instance_centroids(label)
    areas = np.bincount(label.ravel(), minlength=n + 1).astype(np.float32)
    req = np.sqrt(areas / np.pi)  # equivalent radius per id

    # distance to the cell border, normalised by the cell radius -> perinuclear brightening
    edt = ndimage.distance_transform_edt(label > 0)
    border = _id_border(label)
    edt_in = ndimage.distance_transform_edt(~border & (label > 0))
    depth = np.clip(np.minimum(edt, edt_in) / np.maximum(req[label], 1.0), 0, 1)

    # ---- nuclei: an ellipse inside each cell near its centre; some dim, some cells with two
    nuc_int = np.zeros((H, W), np.float32)
    nuc_lab = np.zeros((H, W), np.int32)
    n_nuc = np.ones(n + 1, int)
    n_nuc[rng.random(n + 1) < k["binucleated"]] = 2
    nuc_bright = rng.uniform(0.5, 1.0, n + 1)
    nuc_bright[rng.random(n + 1) < k["missing_nuclei"]] = rng.uniform(0.03, 0.07)
    for i, c in zip(ids.tolist(), cents):  # one nucleus (or two) per cell: a few dozen cells
        rn = float(np.clip(0.42 * req[i], 4.0 * sc, 9.0 * sc))
        offs = [(0.0, 0.0)] if n_nuc[i] == 1 else [(-0.55, 0.0), (0.55, 0.0)]
        ang = rng.uniform(0, np.pi)
        jitter = rng.normal(0, 0.12 * req[i], 2)
        for oy, _ in offs:
            cy = c[0] + jitter[0] + oy * rn * 1.3 * np.sin(ang)
            cx = c[1] + jitter[1] + oy * rn * 1.3 * np.cos(ang)
            rr = rn * (0.8 if n_nuc[i] == 2 else 1.0)
            star = random_star(rng, cy, cx, rr, rng.uniform(1.0, 1.4), 0.04, angle=ang)
            bsl = bbox_slices(cy, cx, star.extent, (H, W))
            if bsl is None:
                continue
            f = shape_field(star, bsl)
            inside = label[bsl] == i
            a = f["alpha"] * inside
            nuc_int[bsl] = np.maximum(nuc_int[bsl], a * nuc_bright[i] * (0.85 + 0.15 * (1 - f["q"].clip(0, 1) ** 2)))
            nuc_lab[bsl] = np.where((f["alpha"] >= 0.5) & inside, i, nuc_lab[bsl])
    n_deb = int(round(k["nuclei_debris"] * H * W / 256**2))
    if n_deb:
        deb = np.zeros((H, W), np.float32)
        deb[rng.integers(0, H, n_deb), rng.integers(0, W, n_deb)] = rng.uniform(25, 40, n_deb)
        nuc_int += ndimage.gaussian_filter(deb, 1.6 * sc)

    # ---- cytoplasm channel
    tex = 1.0 + k["texture"] * smooth_noise(rng, (H, W), 1.2 * sc) + 0.5 * k["texture"] * smooth_noise(
        rng, (H, W), 4 * sc
    )
    cyto = bright[label] * (0.6 + 0.4 * np.sqrt(depth)) * np.clip(tex, 0.3, None)
    nuc_mask = nuc_lab > 0
    cyto = np.where(nuc_mask, cyto * 0.72, cyto)
    cyto = np.where(border, cyto * (1 - k["border"]), cyto)
    bg = 0.06
    illum = 1.0 + k["illumination"] * smooth_noise(rng, (H, W), 60 * sc)
    cyto = (bg + cyto) * np.clip(illum, 0.4, None)
    nuc_img = (0.04 + nuc_int * (1 + 0.15 * smooth_noise(rng, (H, W), 1.0 * sc))) * np.clip(illum, 0.4, None)

    def _acquire(x: np.ndarray) -> np.ndarray:
        if k["blur"] > 0:
            x = ndimage.gaussian_filter(x, k["blur"] * sc)
        x = np.clip(x, 0, None)
        if k["photons"]:
            x = rng.poisson(x * k["photons"]).astype(np.float32) / k["photons"]
        x = x + rng.normal(0, k["noise"], x.shape).astype(np.float32)
        return np.clip(x, 0, 1).astype(np.float32)

    cyto_img, nuc_img = _acquire(cyto), _acquire(nuc_img)

    rn_typ = 0.42 * 0.5 * (lo + hi)
    pts = detect_blobs(nuc_img, sigma=rn_typ / np.sqrt(2), threshold=k["point_threshold"], min_distance=int(rn_typ))
    meta = {
        "id": f"fluo_{seed_of(seed)}",
        "dataset": "synthetic_fluorescence",
        "image_path": "",
        "seed": seed_of(seed),
        "kind": "fluorescence",
        "channels": channels,
        "n_instances": n,
        "difficulty": {kk: (list(v) if isinstance(v, tuple) else v) for kk, v in k.items()},
    }
    image = cyto_img[None] if channels == "cyto" else np.stack([cyto_img, nuc_img])
    return sample_dict(
        image,
        label,
        meta,
        nuclei=nuc_img[None],
        nuclei_label=nuc_lab[None].astype(np.int32),
        points=pts,
        gt_points=cents.astype(np.float32),
    )


def _inside_fraction(cy: float, cx: float, r: float, H: int, W: int) -> float:
    """Rough fraction of a disc that lies inside the image (for the minimum-visible-area test)."""
    fy = np.clip((min(cy + r, H) - max(cy - r, 0)) / (2 * r), 0, 1)
    fx = np.clip((min(cx + r, W) - max(cx - r, 0)) / (2 * r), 0, 1)
    return float(fy * fx)


def _id_border(label: np.ndarray) -> np.ndarray:
    """Pixels of a cell that touch a different non-zero id (4-neighbourhood): the shared border of touching cells."""
    b = np.zeros(label.shape, bool)
    for ax in (0, 1):  # the two axes, both directions
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        a, c = label[tuple(lo)], label[tuple(hi)]
        diff = (a != c) & (a > 0) & (c > 0)
        b[tuple(lo)] |= diff
        b[tuple(hi)] |= diff
    return b
