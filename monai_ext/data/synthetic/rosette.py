# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Leaf rosettes (CVPPP A1-like): overlapping, touching leaves radiating from a centre, on soil.

Leaves follow a golden-angle phyllotaxis; older leaves are larger, further out and lie below younger ones (the
label is the visible part of each leaf, later leaves occlude earlier ones). Each leaf is a teardrop blade on a
petiole, green with its own hue, shaded towards the rim, with a midrib and lateral veins; leaf borders darken
(self-shadowing) so touching leaves stay separable. The background is textured soil with a few moss specks
(green distractors that are not plant).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._common import (
    SeedLike,
    StarShape,
    as_rng,
    bbox_slices,
    inside_points,
    keep_largest_parts,
    relabel_sequential,
    sample_dict,
    seed_of,
    shape_field,
    smooth_noise,
)

__all__ = ["synth_rosette", "ROSETTE_DEFAULTS"]

#: Difficulty knobs of :func:`synth_rosette` and their defaults (sizes relative to ``min(H, W)``).
ROSETTE_DEFAULTS: dict[str, Any] = {
    "leaves": (8, 18),  # number of leaves (inclusive range)
    "size": (0.33, 0.45),  # rosette radius range as a fraction of min(H, W)
    "width": (0.45, 0.7),  # blade width / length ratio
    "angle_jitter": 0.25,  # phyllotaxis angle noise (rad); larger -> more overlaps
    "hue_jitter": 0.08,  # leaf-to-leaf colour variation
    "edge_shadow": 0.35,  # darkening along leaf borders (0 = touching leaves merge visually)
    "veins": 0.12,  # vein contrast
    "moss": 6,  # green moss specks on the soil (not plant)
    "blur": 0.7,  # Gaussian blur sigma (px)
    "noise": 0.02,  # Gaussian noise std
}


def synth_rosette(seed: SeedLike = 0, shape: tuple[int, int] = (256, 256), **difficulty: Any) -> dict[str, Any]:
    """One rosette image with leaf instances and the plant foreground mask.

    Args:
        seed: int, ``SeedSequence`` or ``Generator``.
        shape: ``(H, W)``.
        **difficulty: knobs of :data:`ROSETTE_DEFAULTS`.

    Returns:
        ``{"image": (3, H, W) float32 RGB in [0, 1], "label": (1, H, W) int32 leaves 1..N (visible parts),
        "fg": (1, H, W) uint8 plant mask (= label > 0), "gt_points": (N, 2) float32 inside point per leaf,
        "meta"}``.
    """
    unknown = set(difficulty) - set(ROSETTE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown rosette difficulty knobs {sorted(unknown)}; known: {sorted(ROSETTE_DEFAULTS)}")
    k = {**ROSETTE_DEFAULTS, **difficulty}
    rng = as_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    S = float(min(H, W))
    n = int(rng.integers(k["leaves"][0], k["leaves"][1] + 1))
    R = rng.uniform(*k["size"]) * S
    cy, cx = H / 2 + rng.normal(0, 0.04 * S), W / 2 + rng.normal(0, 0.04 * S)

    label = np.zeros((H, W), np.int32)
    U = np.zeros((H, W), np.float32)  # along-blade coordinate of the visible leaf, in [-1, 1]
    V = np.zeros((H, W), np.float32)  # across-blade coordinate, in [-1, 1]
    Q = np.zeros((H, W), np.float32)  # normalised radius inside the blade
    golden = np.deg2rad(137.508)
    phi0 = rng.uniform(0, 2 * np.pi)
    for j in range(n):  # oldest (largest, outer) first, youngest on top; a dozen leaves
        age = 1.0 - j / max(n - 1, 1)  # 1 = oldest
        ang = phi0 + j * golden + rng.normal(0, k["angle_jitter"])
        length = R * (0.35 + 0.65 * age**0.8) * rng.uniform(0.85, 1.1)
        pet = length * rng.uniform(0.15, 0.3) * (0.4 + 0.6 * age)
        a = 0.5 * (length - pet)
        b = a * rng.uniform(*k["width"])
        dist = pet + a
        by, bx = cy + dist * np.sin(ang), cx + dist * np.cos(ang)
        blade = StarShape(by, bx, a, b, ang, amps=rng.uniform(0, 0.04, 2), phases=rng.uniform(0, 6.3, 2),
                          tear=rng.uniform(0.1, 0.3))
        ext = dist + a * 1.4 + 2
        sl = bbox_slices(cy, cx, ext, (H, W))
        if sl is None:
            continue
        f = shape_field(blade, sl)
        # the teardrop narrows towards the centre: the -u side is thinner
        inside = f["q"] < 1.0
        # petiole: a thin band from the rosette centre to the blade
        up = f["u"] + dist  # coordinate from the rosette centre along the leaf axis
        pw = max(1.2, 0.12 * b)
        petiole = (up > 0) & (up < dist) & (np.abs(f["v"]) < pw * (1.0 - 0.3 * up / max(dist, 1)))
        m = inside | petiole
        if m.sum() < 10:
            continue
        lid = j + 1
        label[sl] = np.where(m, lid, label[sl])
        U[sl] = np.where(m, np.clip(f["u"] / a, -1.5, 1), U[sl])
        V[sl] = np.where(m, np.clip(f["v"] / b, -1, 1), V[sl])
        Q[sl] = np.where(m, np.where(inside, f["q"], 0.9), Q[sl])
    label = keep_largest_parts(label, min_size=15)
    order_ids = label.copy()  # draw order survives relabelling: needed for the shadows
    label = relabel_sequential(label)
    fg = label > 0

    # ---- per-leaf colour (lookup by draw-order id), shading, veins, border shadow
    ids = np.arange(n + 1)
    youth = ids / max(n, 1)
    base = np.stack([0.22 + 0.12 * youth, 0.45 + 0.15 * youth, 0.12 + 0.04 * youth], 1)
    base = base * (1 + k["hue_jitter"] * rng.normal(0, 1, (n + 1, 3)))
    base = np.clip(base, 0, 1).astype(np.float32)
    col = base[order_ids].transpose(2, 0, 1)  # (3, H, W)
    shade = 1.0 - 0.3 * np.clip(Q, 0, 1) ** 2 + 0.1 * U
    midrib = np.exp(-((V / 0.07) ** 2)) * (U > -1.0)
    vein_per = rng.uniform(0.22, 0.3)
    lateral = np.exp(-((np.cos(np.pi * (U - 0.9 * np.abs(V)) / vein_per)) ** 2) / 0.02) * (np.abs(V) < 0.85)
    veins = k["veins"] * (midrib + 0.5 * lateral)
    leaf_rgb = col * shade[None] * (1 + veins[None]) * (1 + 0.06 * smooth_noise(rng, (H, W), 2.0)[None])
    # shadows where a leaf lies under another one (its neighbour pixel has a later draw order)
    above = ndimage.maximum_filter(order_ids, size=3) > order_ids
    border = (ndimage.maximum_filter(order_ids, size=3) != ndimage.minimum_filter(order_ids, size=3)) & fg
    shadow = ndimage.gaussian_filter((above & fg).astype(np.float32), 1.5) * 2.0 + ndimage.gaussian_filter(
        border.astype(np.float32), 0.7
    )
    leaf_rgb = leaf_rgb * (1 - k["edge_shadow"] * np.clip(shadow, 0, 1))[None]

    # ---- soil: brown, grainy, with pebbles and moss specks
    soil_base = np.array([0.33, 0.24, 0.16], np.float32) * rng.uniform(0.8, 1.15)
    grain = 0.12 * smooth_noise(rng, (H, W), 1.0) + 0.1 * smooth_noise(rng, (H, W), 4.0) + 0.08 * smooth_noise(
        rng, (H, W), 16.0
    )
    pebbles = np.clip(smooth_noise(rng, (H, W), 1.5) - 2.0, 0, None) * 0.4
    soil = soil_base[:, None, None] * (1 + grain + pebbles)[None]
    n_moss = int(round(k["moss"] * H * W / 256**2))
    if n_moss:
        moss = np.zeros((H, W), np.float32)
        moss[rng.integers(0, H, n_moss), rng.integers(0, W, n_moss)] = 1.0
        moss = ndimage.gaussian_filter(moss, 2.0) * 25
        moss = np.clip(moss * (1 + smooth_noise(rng, (H, W), 1.0)), 0, 1) * (~fg)
        green = np.array([0.2, 0.38, 0.12], np.float32)[:, None, None]
        soil = soil * (1 - moss[None]) + green * moss[None]
    # drop shadow of the plant on the soil
    plant_shadow = ndimage.gaussian_filter(fg.astype(np.float32), 4.0)
    soil = soil * (1 - 0.35 * plant_shadow)[None]
    rgb = np.where(fg[None], leaf_rgb, soil)
    rgb = rgb * (1 + 0.1 * smooth_noise(rng, (H, W), 0.5 * S)[None])
    if k["blur"] > 0:
        rgb = ndimage.gaussian_filter(rgb, (0, k["blur"], k["blur"]))
    if k["noise"] > 0:
        rgb = rgb + rng.normal(0, k["noise"], rgb.shape).astype(np.float32)

    _, pts = inside_points(label)
    meta = {
        "id": f"rosette_{seed_of(seed)}",
        "dataset": "synthetic_rosette",
        "image_path": "",
        "seed": seed_of(seed),
        "kind": "rosette",
        "n_instances": int(label.max()),
        "difficulty": {kk: (list(v) if isinstance(v, tuple) else v) for kk, v in k.items()},
    }
    return sample_dict(rgb, label, meta, fg=fg[None].astype(np.uint8), gt_points=pts)
