# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""H&E-like nuclei tiles (MoNuSeg at reduced scale) with exact instance ground truth.

The tile is rendered in optical density (Beer-Lambert): haematoxylin + eosin densities are built from tissue regions
and nuclei, mixed with (jittered) Ruifrok stain vectors, then blurred and noised. What makes naive "stain
deconvolution + threshold + distance-transform watershed" imperfect, while the truth stays clear to a careful eye:

- basophilic stroma: fibre bundles and cytoplasm that carry haematoxylin at the level of pale nuclei (false
  positives, the trap COIN's OT step addresses), plus small dark debris;
- pale / vesicular nuclei with a dark rim, a nucleolus and a light interior, and chromatin texture (misses, holes);
- clumps of touching and slightly overlapping nuclei of different sizes (merges / over-splits);
- elongated fibroblast nuclei, small dark lymphocytes, blur and noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._common import (
    SeedLike,
    as_rng,
    bbox_slices,
    fibre_texture,
    random_star,
    sample_dict,
    seed_of,
    shape_field,
    smooth_noise,
)

__all__ = ["synth_he_tile", "HE_DEFAULTS", "STAIN_H", "STAIN_E"]

#: Ruifrok & Johnston optical-density vectors (log10 units) of haematoxylin and eosin.
STAIN_H = np.array([0.650, 0.704, 0.286])
STAIN_E = np.array([0.072, 0.990, 0.105])

#: Difficulty knobs of :func:`synth_he_tile` and their defaults (radii are for ``scale=1``, i.e. a 256^2 tile).
HE_DEFAULTS: dict[str, Any] = {
    "density": 0.26,  # target fraction of the tile covered by nuclei
    "radius": (7.0, 19.0),  # epithelial nucleus radius range (px); lognormal around ~11 px, clipped to this
    "epithelium": 0.5,  # fraction of the tile that is epithelium (crowded large nuclei); the rest is stroma
    "clump": 0.65,  # probability that an epithelial nucleus is placed touching an existing one
    "max_overlap": 0.15,  # largest overlap between two nuclei, as a fraction of the smaller one's area
    "pale_fraction": 0.25,  # fraction of epithelial nuclei that are pale / vesicular (light interior, dark rim)
    "lymphocytes": 0.15,  # fraction of nuclei that are small, round and very dark
    "fibroblasts": 0.12,  # fraction of nuclei that are elongated and thin (in stroma)
    "stroma_h": 0.5,  # haematoxylin OD of basophilic stroma fibres (pale nuclei are ~0.25-0.4): the FP trap
    "stroma_h_fraction": 0.35,  # fraction of the stroma that is basophilic
    "cytoplasm_h": 0.16,  # haematoxylin OD of (amphophilic) epithelial cytoplasm
    "debris": 12,  # small dark specks (not nuclei)
    "lumen": 0.08,  # fraction of the tile that is empty (lumen / fat)
    "chromatin": 0.3,  # relative amplitude of the chromatin texture inside nuclei
    "blur": 1.0,  # Gaussian blur sigma (px), jittered +-25 %
    "noise": 0.02,  # additive Gaussian noise std (intensity)
    "stain_jitter": 0.04,  # per-tile jitter of the stain vectors and of the stain amounts
    "scale": 1.0,  # size multiplier of every structure (nuclei keep their pixel size when ``shape`` changes)
}


def _nucleus_params(rng: np.random.Generator, kind: str, k: dict[str, Any], sc: float) -> dict[str, Any]:
    """Size, shape and stain of one nucleus of ``kind`` (epithelial / pale / lymphocyte / fibroblast)."""
    if kind == "lymphocyte":
        return {"radius": rng.uniform(5.0, 7.0) * sc, "aspect": rng.uniform(1.0, 1.25), "wobble": 0.04,
                "od": rng.uniform(1.0, 1.35), "profile": "solid"}
    if kind == "fibroblast":
        return {"radius": rng.uniform(6.5, 9.5) * sc, "aspect": rng.uniform(3.0, 5.0), "wobble": 0.05,
                "od": rng.uniform(0.55, 0.9), "profile": "solid"}
    lo, hi = k["radius"]
    r = float(np.clip(np.exp(rng.normal(np.log(0.5 * (lo + hi) * 0.85), 0.25)), lo, hi)) * sc
    if kind == "pale":
        return {"radius": r, "aspect": rng.uniform(1.0, 1.6), "wobble": rng.uniform(0.05, 0.12),
                "od": rng.uniform(0.2, 0.32), "profile": "vesicular"}
    return {"radius": r, "aspect": rng.uniform(1.0, 1.7), "wobble": rng.uniform(0.05, 0.14),
            "od": rng.uniform(0.5, 1.0), "profile": "solid"}


def synth_he_tile(seed: SeedLike = 0, shape: tuple[int, int] = (256, 256), **difficulty: Any) -> dict[str, Any]:
    """One H&E-like tile with touching / overlapping nuclei and its instance label.

    Args:
        seed: int, ``SeedSequence`` or ``Generator``; the same seed gives the same tile.
        shape: ``(H, W)``; nuclei keep their pixel size (set ``scale`` to resize them).
        **difficulty: knobs of :data:`HE_DEFAULTS`; e.g. ``stroma_h=0.0, pale_fraction=0.0, clump=0.0, blur=0.5``
            gives an easy tile, raising ``stroma_h`` / ``pale_fraction`` / ``clump`` makes thresholding worse.

    Returns:
        ``{"image": (3, H, W) float32 RGB in [0, 1], "label": (1, H, W) int32 (ids 1..N, later nuclei drawn on top
        of earlier ones), "hematoxylin": (1, H, W) float32 true haematoxylin OD (before blur and noise),
        "meta": {"id", "dataset": "synthetic_he", "image_path", "seed", "kind", "n_instances", "difficulty"}}``.
    """
    unknown = set(difficulty) - set(HE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown H&E difficulty knobs {sorted(unknown)}; known: {sorted(HE_DEFAULTS)}")
    k = {**HE_DEFAULTS, **difficulty}
    rng = as_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    sc = float(k["scale"])

    # ---- tissue regions: epithelium / stroma / lumen, from smooth random fields
    region = smooth_noise(rng, (H, W), 22 * sc)
    epi_thr = np.quantile(region, 1.0 - k["epithelium"]) if k["epithelium"] > 0 else np.inf
    epi_soft = np.clip((region - epi_thr) / 0.35 + 0.5, 0, 1)
    lum_field = smooth_noise(rng, (H, W), 10 * sc)
    lumen = (lum_field > np.quantile(lum_field, 1.0 - k["lumen"])) if k["lumen"] > 0 else np.zeros((H, W), bool)
    lumen_soft = ndimage.gaussian_filter(lumen.astype(np.float32), 2.0)
    epi = epi_soft > 0.5

    # ---- nuclei: sequential placement with overlap / connectivity checks (per-object loop, a few dozen objects)
    label = np.zeros((H, W), np.int32)
    h_nuc = np.zeros((H, W), np.float32)
    profile_map = np.ones((H, W), np.float32)
    areas: dict[int, int] = {}
    boxes: dict[int, tuple[slice, slice]] = {}
    centres: list[tuple[float, float, float, int]] = []  # cy, cx, radius, id of epithelial nuclei (clump anchors)
    target = k["density"] * H * W
    covered, next_id, attempts = 0.0, 1, 0
    epi_idx = np.flatnonzero(epi & ~lumen)
    str_idx = np.flatnonzero(~epi & ~lumen)
    fib_angle = rng.uniform(0, np.pi)
    max_attempts = int(60 + 25 * target / (np.pi * (11 * sc) ** 2))
    while covered < target and attempts < max_attempts:
        attempts += 1
        u = rng.random()
        if u < k["lymphocytes"]:
            kind = "lymphocyte"
        elif u < k["lymphocytes"] + k["fibroblasts"]:
            kind = "fibroblast"
        else:
            kind = "pale" if rng.random() < k["pale_fraction"] else "epithelial"
        p = _nucleus_params(rng, kind, k, sc)
        angle = None
        if kind in ("epithelial", "pale") and centres and rng.random() < k["clump"]:
            ay, ax, ar, _ = centres[rng.integers(len(centres))]
            t = rng.uniform(0, 2 * np.pi)
            d = (ar + p["radius"]) * rng.uniform(0.8, 1.0)
            cy, cx = ay + d * np.sin(t), ax + d * np.cos(t)
        else:
            pool = epi_idx if kind in ("epithelial", "pale") else (str_idx if kind == "fibroblast" else None)
            if pool is None:
                pool = epi_idx if (rng.random() < 0.4 and epi_idx.size) else str_idx
            if pool.size == 0:
                pool = np.arange(H * W)
            flat = pool[rng.integers(pool.size)]
            cy, cx = flat // W + rng.random(), flat % W + rng.random()
            if kind == "fibroblast":
                angle = fib_angle + rng.normal(0, 0.35)
        if not (0 <= cy < H and 0 <= cx < W) or lumen[int(cy), int(cx)]:
            continue
        star = random_star(rng, cy, cx, p["radius"], p["aspect"], p["wobble"], angle=angle)
        sl = bbox_slices(cy, cx, star.extent, (H, W))
        if sl is None:
            continue
        f = shape_field(star, sl)
        m = f["alpha"] >= 0.5
        area = int(m.sum())
        if area < 12:
            continue
        under = label[sl][m]
        ids, cnt = np.unique(under[under > 0], return_counts=True)
        ok = True
        for i, c in zip(ids.tolist(), cnt.tolist()):  # the few nuclei this one would overlap
            if c > k["max_overlap"] * min(area, areas[i]):
                ok = False
                break
            bs = boxes[i]
            rest = label[bs] == i
            ys, xs = sl[0].start - bs[0].start, sl[1].start - bs[1].start
            # clear the new shape's pixels from the old one's box and check it stays in one piece
            yy0, xx0 = max(ys, 0), max(xs, 0)
            yy1 = min(ys + m.shape[0], rest.shape[0])
            xx1 = min(xs + m.shape[1], rest.shape[1])
            if yy1 > yy0 and xx1 > xx0:
                rest[yy0:yy1, xx0:xx1] &= ~m[yy0 - ys:yy1 - ys, xx0 - xs:xx1 - xs]
            if ndimage.label(rest)[1] != 1:
                ok = False
                break
        if not ok:
            continue
        # accept
        i = next_id
        next_id += 1
        label[sl][m] = i
        for j, c in zip(ids.tolist(), cnt.tolist()):
            areas[j] -= c
        areas[i], boxes[i] = area, sl
        covered += area - int(cnt.sum())
        q = f["q"]
        if p["profile"] == "vesicular":
            # light interior, dark rim (nuclear membrane / marginated chromatin), one nucleolus
            prof = 0.55 + 1.6 * np.clip(q, 0, 1) ** 6
            ny, nx = rng.normal(0, 0.25 * p["radius"], 2)
            nuc = np.exp(-((f["u"] - nx) ** 2 + (f["v"] - ny) ** 2) / (2 * (0.16 * p["radius"]) ** 2))
            prof = prof + 2.2 * nuc
        else:
            prof = 0.85 + 0.3 * np.clip(q, 0, 1) ** 2
        h_nuc[sl] += f["alpha"] * p["od"] * prof
        if kind in ("epithelial", "pale"):
            centres.append((cy, cx, p["radius"], i))
    nuc_alpha = np.clip(h_nuc / 0.2, 0, 1)

    # ---- chromatin texture: fine granules modulate the nuclear haematoxylin
    chrom = 1.0 + k["chromatin"] * smooth_noise(rng, (H, W), 1.0) + 0.5 * k["chromatin"] * smooth_noise(
        rng, (H, W), 2.5
    )
    h_nuc = h_nuc * np.clip(chrom, 0.25, None)

    # ---- stroma: wavy eosinophilic fibres; some bundles basophilic (haematoxylin-stained: the false-positive trap)
    fib = fibre_texture(rng, (H, W), fib_angle, along=9 * sc, across=1.1 * sc, wave=5 * sc, wave_sigma=16 * sc)
    fib2 = fibre_texture(rng, (H, W), fib_angle + 0.4, along=14 * sc, across=2.5 * sc, wave=8 * sc)
    fibres = np.clip(0.45 + 0.3 * fib + 0.2 * fib2, 0, 1.2)
    stroma = (1 - epi_soft) * (1 - lumen_soft)
    baso_field = smooth_noise(rng, (H, W), 14 * sc)
    thr = np.quantile(baso_field, 1.0 - k["stroma_h_fraction"]) if k["stroma_h_fraction"] > 0 else np.inf
    baso = np.clip((baso_field - thr) / 0.4 + 0.5, 0, 1)
    # basophilic fibres: strands and streaks whose haematoxylin matches pale nuclei
    h_str = stroma * (0.04 + k["stroma_h"] * baso * np.clip(1.3 * fibres + 0.25, 0, 1.2))
    e_str = stroma * (0.06 + 0.32 * fibres * (1 - 0.4 * baso))

    # ---- epithelial cytoplasm: eosin + some haematoxylin (amphophilic), blotchy
    blot = np.clip(1 + 0.35 * smooth_noise(rng, (H, W), 4 * sc), 0.3, 2.0)
    epi_c = epi_soft * (1 - lumen_soft)
    h_cyt = epi_c * k["cytoplasm_h"] * blot
    e_cyt = epi_c * rng.uniform(0.16, 0.26) * np.clip(1 + 0.25 * smooth_noise(rng, (H, W), 3 * sc), 0.3, 2)

    # ---- debris: small dark specks in the stroma (not nuclei)
    h_deb = np.zeros((H, W), np.float32)
    n_deb = int(k["debris"] * H * W / 256**2)
    if n_deb and str_idx.size:
        flat = str_idx[rng.integers(str_idx.size, size=n_deb)]
        h_deb.ravel()[flat] = rng.uniform(6.0, 14.0, n_deb)
        h_deb = ndimage.gaussian_filter(h_deb, rng.uniform(0.9, 1.6))

    # ---- mix: nuclei replace (not add to) the background stain where they are
    h_od = h_nuc + (1 - nuc_alpha) * (h_str + h_cyt) + h_deb
    e_od = 0.06 * nuc_alpha + (1 - nuc_alpha) * (e_str + e_cyt)
    lum = 1 - lumen_soft * (1 - nuc_alpha)
    h_od = h_od * (0.15 + 0.85 * lum)
    e_od = e_od * (0.1 + 0.9 * lum)

    j = k["stain_jitter"]
    sh = np.abs(STAIN_H + rng.normal(0, j, 3))
    se = np.abs(STAIN_E + rng.normal(0, j, 3))
    sh, se = sh / np.linalg.norm(sh), se / np.linalg.norm(se)
    h_amt, e_amt = rng.uniform(1 - 3 * j, 1 + 3 * j, 2)
    od = (h_amt * h_od)[None] * sh[:, None, None].astype(np.float32) + (e_amt * e_od)[None] * se[
        :, None, None
    ].astype(np.float32)
    od = od + 0.02  # slide / mounting medium
    i0 = rng.uniform(0.93, 0.99, 3).astype(np.float32)[:, None, None]
    rgb = i0 * np.power(10.0, -od, dtype=np.float32)

    blur = k["blur"] * rng.uniform(0.75, 1.25)
    if blur > 0:
        rgb = ndimage.gaussian_filter(rgb, (0, blur, blur))
    if k["noise"] > 0:
        rgb = rgb + rng.normal(0, k["noise"], rgb.shape).astype(np.float32) * np.sqrt(np.clip(rgb, 0.05, 1))
        rgb = rgb + k["noise"] * 0.5 * smooth_noise(rng, (H, W), 1.0)[None]
    meta = {
        "id": f"he_{seed_of(seed)}",
        "dataset": "synthetic_he",
        "image_path": "",
        "seed": seed_of(seed),
        "kind": "he",
        "n_instances": int(next_id - 1),
        "difficulty": {kk: (list(v) if isinstance(v, tuple) else v) for kk, v in k.items()},
    }
    return sample_dict(rgb, label, meta, hematoxylin=h_od[None].astype(np.float32))
