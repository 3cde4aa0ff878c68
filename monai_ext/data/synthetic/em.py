# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""EM mitochondria (Lucchi / MitoEM-like) in two domains, 2D slices or 3D volumes, with instance ground truth.

Mitochondria are bent, elongated ellipsoids (mostly lying in the section plane) with a dark double membrane and a
matrix crossed by lamellar cristae. Distractors: cell membranes (thin dark curved sheets, from a warped Voronoi
partition), endoplasmic reticulum (thin dark curves), vesicles (light disks with a dark rim), dense dark organelles
(lysosomes / lipid droplets) and a granular cytoplasm. A 2D tile is one section through 3D objects.

Domains (:data:`EM_DOMAINS`) differ in pixel size (all structures ~1.4x larger in the target), contrast and gamma,
noise level and grain, blur, cristae spacing and membrane thickness, so a model trained on the source alone drops on
the target while the target stays learnable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._common import (
    SeedLike,
    as_rng,
    inside_points,
    keep_largest_parts,
    relabel_sequential,
    sample_dict,
    seed_of,
    smooth_noise,
)

__all__ = ["synth_em", "EM_DEFAULTS", "EM_DOMAINS", "sparse_points"]

#: Knobs shared by both domains (sizes in pixels at ``scale=1``).
EM_DEFAULTS: dict[str, Any] = {
    "density": 0.16,  # target fraction of the tile / volume covered by mitochondria
    "length": (12.0, 30.0),  # mitochondrion half-length range (px)
    "width": (5.0, 8.0),  # mitochondrion half-width range (px)
    "bend": 0.6,  # maximal bending (0 = straight ellipsoids)
    "z_step": 2.0,  # physical thickness of one section in pixel units (anisotropy of 3D volumes)
    "cells": 5,  # cells per 256^2 (their membranes are distractors)
    "vesicles": 25,  # vesicles per 256^2
    "dense_bodies": 6,  # dark round organelles per 256^2 (the main false-positive trap)
    "er": 0.5,  # amount of endoplasmic reticulum (0..1)
    "point_fraction": 0.15,  # fraction of instances that get a point in ``points``
}

#: Per-domain appearance; ``synth_em(domain=...)`` starts from these, keyword arguments override them.
EM_DOMAINS: dict[str, dict[str, Any]] = {
    "source": {
        "scale": 1.0,  # size of every structure (pixel size of the domain)
        "contrast": 1.0,  # multiplies intensity deviations around mid-grey
        "gamma": 1.0,  # intensity gamma after contrast
        "invert": False,  # invert the grey values (negative contrast)
        "noise": 0.035,  # Gaussian noise std
        "grain": 0.7,  # correlation length of the noise (px)
        "blur": 0.6,  # Gaussian blur sigma (px)
        "cristae_period": 4.5,  # spacing of the cristae (px, before ``scale``)
        "membrane": 1.0,  # thickness multiplier of all membranes
        "background": 0.68,  # cytoplasm grey level
    },
    "target": {
        "scale": 1.4,
        "contrast": 0.8,
        "gamma": 1.5,
        "invert": False,
        "noise": 0.045,
        "grain": 1.3,
        "blur": 0.9,
        "cristae_period": 3.5,
        "membrane": 1.5,
        "background": 0.6,
    },
}


def _frame(rng: np.random.Generator, planar: bool) -> np.ndarray:
    """Random orthonormal frame ``(3, 3)`` (rows e1, e2, e3, in (z, y, x)); e1 (long axis) mostly in-plane."""
    phi = rng.uniform(0, 2 * np.pi)
    elev = 0.0 if planar else float(np.clip(rng.normal(0, 0.3), -0.8, 0.8))
    e1 = np.array([np.sin(elev), np.cos(elev) * np.sin(phi), np.cos(elev) * np.cos(phi)])
    tmp = np.array([1.0, 0, 0]) if abs(e1[0]) < 0.9 else np.array([0, 1.0, 0])
    e2 = np.cross(e1, tmp)
    e2 /= np.linalg.norm(e2)
    e3 = np.cross(e1, e2)
    roll = rng.uniform(0, 2 * np.pi)
    e2, e3 = np.cos(roll) * e2 + np.sin(roll) * e3, -np.sin(roll) * e2 + np.cos(roll) * e3
    return np.stack([e1, e2, e3])


def sparse_points(
    label: np.ndarray, fraction: float, seed: SeedLike = 0, per_slice: bool = False, min_count: int = 1
) -> np.ndarray:
    """Points inside a random ``fraction`` of the instances (WDA-style sparse point labels).

    Args:
        label: ``(H, W)`` or ``(D, H, W)`` instance ids (a leading channel axis of 1 is dropped).
        fraction: share of instances that get a point (rounded up, at least ``min_count`` when any exist).
        per_slice: for 3D labels, pick per z slice among the instances present in that slice (2D points at the
            slice's instance centres, returned as ``(z, y, x)``); else one point per picked 3D instance.

    Returns:
        ``(N, ndim)`` float32 points ((y, x) or (z, y, x)), each inside its instance.
    """
    lab = np.asarray(label)
    if lab.ndim == 4 or (lab.ndim == 3 and lab.shape[0] == 1):
        lab = lab[0]
    rng = as_rng(seed)
    if per_slice and lab.ndim == 3:
        out = []
        for z in range(lab.shape[0]):  # one pick per section
            p = sparse_points(lab[z], fraction, rng, per_slice=False, min_count=min_count)
            out.append(np.concatenate([np.full((len(p), 1), z, np.float32), p], axis=1))
        return np.concatenate(out, 0) if out else np.zeros((0, 3), np.float32)
    ids, pts = inside_points(lab)
    if ids.size == 0 or fraction <= 0:
        return np.zeros((0, lab.ndim), np.float32)
    n = max(min_count, int(np.ceil(fraction * ids.size)))
    pick = np.sort(rng.choice(ids.size, size=min(n, ids.size), replace=False))
    return pts[pick]


def synth_em(
    seed: SeedLike = 0,
    domain: str = "source",
    shape: tuple[int, ...] = (256, 256),
    **difficulty: Any,
) -> dict[str, Any]:
    """An EM tile ``(H, W)`` or volume ``(D, H, W)`` of one domain with mitochondria instances.

    Args:
        seed: int, ``SeedSequence`` or ``Generator``.
        domain: ``"source"`` or ``"target"`` (appearance presets in :data:`EM_DOMAINS`).
        shape: ``(H, W)`` for a 2D section, ``(D, H, W)`` for a volume (sections ``z_step`` px thick).
        **difficulty: knobs of :data:`EM_DEFAULTS` and of the domain preset (e.g. ``scale``, ``gamma``,
            ``invert``, ``noise``, ``dense_bodies``).

    Returns:
        ``{"image": (1, [D,] H, W) float32 in [0, 1], "label": (1, [D,] H, W) int32 mitochondria 1..N,
        "points": (P, ndim) float32 inside a seeded ``point_fraction`` of the instances, "gt_points": (N, ndim)
        one inside point per instance (id order), "meta": {..., "domain"}}``.
    """
    if domain not in EM_DOMAINS:
        raise ValueError(f"domain must be one of {sorted(EM_DOMAINS)}, got {domain!r}")
    known = set(EM_DEFAULTS) | set(EM_DOMAINS[domain])
    unknown = set(difficulty) - known
    if unknown:
        raise ValueError(f"unknown EM difficulty knobs {sorted(unknown)}; known: {sorted(known)}")
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (D, H, W), got {shape}")
    k = {**EM_DEFAULTS, **EM_DOMAINS[domain], **difficulty}
    rng = as_rng(seed)
    is2d = len(shape) == 2
    D, H, W = (1, *shape) if is2d else tuple(int(s) for s in shape)
    sc = float(k["scale"])
    zs = float(k["z_step"])
    mem_w = float(k["membrane"])
    area2d = H * W / 256.0**2

    zz, yy, xx = np.meshgrid(np.arange(D, dtype=np.float32) * zs, np.arange(H, dtype=np.float32),
                             np.arange(W, dtype=np.float32), indexing="ij")

    # ---- cells: warped Voronoi partition; membranes where the two nearest seeds are almost equally far
    n_cells = max(2, int(round(k["cells"] * area2d / sc**2)))
    warp = [6.0 * sc * smooth_noise(rng, (D, H, W), (3.0, 25.0 * sc, 25.0 * sc)) for _ in range(2)]
    seeds = np.stack([rng.uniform(0, D * zs, n_cells), rng.uniform(-0.1 * H, 1.1 * H, n_cells),
                      rng.uniform(-0.1 * W, 1.1 * W, n_cells)], 1).astype(np.float32)
    d = np.stack([np.sqrt(((zz - s[0]) * 0.3) ** 2 + (yy + warp[0] - s[1]) ** 2 + (xx + warp[1] - s[2]) ** 2)
                  for s in seeds])  # a handful of cells
    d.sort(axis=0)
    gap = d[1] - d[0]
    cell_mem = np.exp(-(gap**2) / (2 * (1.1 * mem_w * sc) ** 2)).astype(np.float32)

    # ---- mitochondria: bent ellipsoids, placed without overlap (a margin of 2 px)
    label = np.zeros((D, H, W), np.int32)
    mito_dark = np.zeros((D, H, W), np.float32)
    target_vox = k["density"] * D * H * W
    n_id, vox, attempts = 0, 0, 0
    period = k["cristae_period"] * sc
    crist_warp = smooth_noise(rng, (D, H, W), (1.0, 2.5 * sc, 2.5 * sc))
    crist_gap = smooth_noise(rng, (D, H, W), (1.0, 1.5 * sc, 1.5 * sc))
    while vox < target_vox and attempts < 400:
        attempts += 1
        a = rng.uniform(*k["length"]) * sc
        b = rng.uniform(*k["width"]) * sc
        c = b * rng.uniform(0.8, 1.1)
        fr = _frame(rng, planar=is2d)
        ctr = np.array([rng.uniform(-0.3 * c, 0.3 * c) if is2d else rng.uniform(0, D * zs),
                        rng.uniform(0, H), rng.uniform(0, W)])
        ext = a * (1 + k["bend"] * 0.5) + 3
        lo = np.floor((ctr - ext) / np.array([zs, 1, 1])).astype(int)
        hi = np.ceil((ctr + ext) / np.array([zs, 1, 1])).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [D, H, W])
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(int(l0), int(h0)) for l0, h0 in zip(lo, hi))
        p = np.stack([zz[sl] - ctr[0], yy[sl] - ctr[1], xx[sl] - ctr[2]])
        u, v, w = (np.tensordot(fr[i], p, 1) for i in range(3))
        kappa = rng.uniform(-1, 1) * k["bend"] / max(a, 1.0)
        v = v - kappa * u**2
        q = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
        dist = (1 - q) * min(b, c)  # ~ distance to the surface (px) near the flanks
        m = dist > -0.5
        vis = int(m.sum())
        if vis < 25 * sc * sc:
            continue
        near = ndimage.binary_dilation(m, iterations=2) if vis else m
        if (label[sl][near] > 0).any():
            continue
        n_id += 1
        vox += vis
        label[sl][m] = n_id
        # darkness: matrix + cristae (lamellae across the long axis) + double membrane at the rim
        ph = rng.uniform(0, 2 * np.pi)
        wav = 0.8 * np.sin(v / (1.5 * b) * np.pi) + 1.6 * crist_warp[sl]
        crist = (0.5 + 0.5 * np.cos(2 * np.pi * u / period + ph + wav)) ** 3
        crist = crist * np.clip(crist_gap[sl] + 0.9, 0, 1) * np.clip(0.8 * b - np.abs(v), 0, 1)
        crist = crist * np.clip(dist - 1.8 * mem_w * sc, 0, 1)
        rim = np.exp(-((dist - 0.7 * mem_w * sc) ** 2) / (0.5 * (mem_w * sc) ** 2)) + 0.75 * np.exp(
            -((dist - 2.2 * mem_w * sc) ** 2) / (0.5 * (mem_w * sc) ** 2)
        )
        matrix = rng.uniform(0.38, 0.5)
        dark = matrix + 0.3 * crist + 0.45 * np.clip(rim, 0, 1)
        mito_dark[sl] = np.where(m, np.clip(dark, 0, 1), mito_dark[sl])
    label = keep_largest_parts(label, min_size=int(12 * sc * sc))
    label = relabel_sequential(label)
    mito = label > 0
    mito_soft = ndimage.gaussian_filter(mito.astype(np.float32), (0, 0.5, 0.5))

    # ---- other organelles (avoiding mitochondria): vesicles (light, dark rim), dense bodies (dark, mottled)
    org = np.zeros((D, H, W), np.float32)  # darkness added
    light = np.zeros((D, H, W), np.float32)  # lightening
    free = ~ndimage.binary_dilation(mito, iterations=3)
    n_ves = int(round(k["vesicles"] * area2d * D / max(1.0, 6.0 / zs) / sc**2))
    n_den = int(round(k["dense_bodies"] * area2d * max(1.0, D * zs / 20.0) / sc**2))
    for kind, count in (("vesicle", n_ves), ("dense", n_den)):
        for _ in range(count):  # a few dozen small organelles
            r = (rng.uniform(3.0, 6.5) if kind == "vesicle" else rng.uniform(5.0, 10.0)) * sc
            ctr = np.array([rng.uniform(0, D * zs), rng.uniform(0, H), rng.uniform(0, W)])
            if is2d:
                ctr[0] = rng.uniform(-0.4 * r, 0.4 * r)
            lo = np.maximum(np.floor((ctr - r - 2) / np.array([zs, 1, 1])).astype(int), 0)
            hi = np.minimum(np.ceil((ctr + r + 2) / np.array([zs, 1, 1])).astype(int) + 1, [D, H, W])
            if np.any(hi <= lo):
                continue
            sl = tuple(slice(int(l0), int(h0)) for l0, h0 in zip(lo, hi))
            rr = np.sqrt((zz[sl] - ctr[0]) ** 2 + (yy[sl] - ctr[1]) ** 2 + (xx[sl] - ctr[2]) ** 2)
            dd = r - rr
            inside = dd > -0.5
            if not inside.any() or not free[sl][inside].all():
                continue
            if kind == "vesicle":
                org[sl] += 0.5 * np.exp(-((dd - 0.6 * mem_w * sc) ** 2) / (0.6 * (mem_w * sc) ** 2)) * (dd > -1.5)
                light[sl] = np.maximum(light[sl], 0.12 * np.clip(dd - 1, 0, 1))
            else:
                org[sl] = np.maximum(org[sl], rng.uniform(0.45, 0.65) * np.clip(dd + 0.5, 0, 1))

    # ---- ER: thin dark curves (zero level set of a smooth field), in patches
    er_f = smooth_noise(rng, (D, H, W), (2.0, 6.0 * sc, 6.0 * sc))
    er_patch = smooth_noise(rng, (D, H, W), (3.0, 20.0 * sc, 20.0 * sc))
    er = np.exp(-((er_f / (0.12 * mem_w)) ** 2)) * np.clip(er_patch - (1.0 - k["er"] * 1.6), 0, 1)

    # ---- assemble darkness: cytoplasm grain + membranes + organelles, mitochondria on top
    grain = 0.06 * smooth_noise(rng, (D, H, W), (0.5, 0.8 * sc, 0.8 * sc)) + 0.04 * smooth_noise(
        rng, (D, H, W), (1.0, 5.0 * sc, 5.0 * sc)
    )
    ribo = np.clip(smooth_noise(rng, (D, H, W), (0.3, 0.6 * sc, 0.6 * sc)) - 1.8, 0, None) * 0.25
    bgd = 1.0 - float(k["background"])
    cyto = bgd + grain + ribo + 0.45 * cell_mem + 0.4 * er + org - light
    dark = (1 - mito_soft) * cyto + mito_soft * np.where(mito, mito_dark, cyto)
    img = 1.0 - np.clip(dark, 0, 1)

    # ---- domain appearance: contrast, gamma, inversion, blur, correlated noise
    img = np.clip(0.5 + k["contrast"] * (img - 0.5), 0, 1)
    if k["gamma"] != 1.0:
        img = img ** float(k["gamma"])
    if k["invert"]:
        img = 1.0 - img
    if k["blur"] > 0:
        img = ndimage.gaussian_filter(img, (0, k["blur"] * sc, k["blur"] * sc))
    if k["noise"] > 0:
        img = img + k["noise"] * smooth_noise(rng, (D, H, W), (0.3, k["grain"], k["grain"]))
        img = img + 0.3 * k["noise"] * rng.standard_normal((D, H, W)).astype(np.float32)
    img = np.clip(img, 0, 1).astype(np.float32)

    if is2d:
        img, label = img[0], label[0]
    ids, inside = inside_points(label)
    pts = sparse_points(label, float(k["point_fraction"]), rng) if k["point_fraction"] > 0 else inside[:0]
    meta = {
        "id": f"em_{domain}_{seed_of(seed)}",
        "dataset": "synthetic_em",
        "image_path": "",
        "seed": seed_of(seed),
        "kind": "em",
        "domain": domain,
        "z_step": zs,
        "n_instances": int(ids.size),
        "difficulty": {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in k.items()},
    }
    return sample_dict(img[None], label, meta, points=pts, gt_points=inside)
