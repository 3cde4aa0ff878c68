# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Overlay pictures of images, instance labels, predictions and points (uint8 RGB arrays and PNG files).

Colours: instances are filled with a fixed palette (any id, also > 2**31, maps to a stable colour), ground-truth
contours are drawn in :data:`GT_COLOR`, prediction contours in :data:`PRED_COLOR`, points as dots in
:data:`POINT_COLOR`, ignore pixels (-1) are greyed. Arrays follow CONVENTIONS.md: channel-first images
``(C, H, W)`` / ``(C, D, H, W)`` in [0, 1], labels ``(1, H, W)`` / ``(1, D, H, W)`` (or without the channel axis),
points ``(N, 2)`` (y, x) or ``(N, 3)`` (z, y, x). 3D inputs show one z slice (the middle one unless ``z`` is given).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PALETTE",
    "GT_COLOR",
    "PRED_COLOR",
    "POINT_COLOR",
    "instance_colors",
    "to_rgb",
    "overlay_instances",
    "save_overlay",
    "save_panel",
]

GT_COLOR = (0, 255, 0)
PRED_COLOR = (255, 0, 255)
POINT_COLOR = (255, 255, 0)
IGNORE_COLOR = (128, 128, 128)


def _make_palette(n: int = 64) -> np.ndarray:
    """``n`` saturated colours spread around the hue circle by the golden ratio (fixed, no RNG)."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895) % 1.0
    sats = 0.55 + 0.45 * ((np.arange(n) * 7) % 3) / 2.0
    vals = 0.75 + 0.25 * ((np.arange(n) * 5) % 2)
    return np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hues, sats, vals)]) * 255.0


#: Fixed instance palette ``(64, 3)`` uint8.
PALETTE = _make_palette().round().astype(np.uint8)


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """Palette colour of each id (``(..., 3)`` uint8); ids are hashed so neighbouring ids get distant colours."""
    ids = np.asarray(ids).astype(np.uint64)
    h = (ids * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return PALETTE[(h % np.uint64(len(PALETTE))).astype(np.int64)]


def _spatial_label(label: Any, ndim: int | None = None) -> np.ndarray:
    """Drop a leading channel axis of size 1 from ``(1, H, W)`` / ``(1, D, H, W)``."""
    lab = np.asarray(_to_numpy(label))
    if lab.ndim == 4 or (lab.ndim == 3 and lab.shape[0] == 1 and ndim != 3):
        if lab.shape[0] != 1:
            raise ValueError(f"label must have one channel, got shape {lab.shape}")
        lab = lab[0]
    if lab.ndim not in (2, 3):
        raise ValueError(f"label must be (H, W), (D, H, W) or with a channel axis, got shape {lab.shape}")
    return lab


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor / MetaTensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scale01(a: np.ndarray) -> np.ndarray:
    """Floats kept if already in [0, 1], else min-max scaled (non-finite values -> 0)."""
    a = a.astype(np.float32)
    if a.size == 0:
        return a
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a
    if hi - lo < 1e-12:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def _image_layout(img: np.ndarray, spatial: tuple[int, ...] | None) -> tuple[np.ndarray, bool]:
    """``(channel-first image, is3d)``; ``spatial`` (a label's shape) tells ``(C, H, W)`` from ``(D, H, W)``."""
    if img.ndim == 2:
        return img[None], False
    if img.ndim == 4:
        return img, True
    if img.ndim != 3:
        raise ValueError(f"image must be 2D, 3D or 4D, got shape {img.shape}")
    if spatial is not None:
        if len(spatial) == 3 and tuple(img.shape) == tuple(spatial):
            return img[None], True
        if len(spatial) == 2 and tuple(img.shape[1:]) == tuple(spatial):
            return img, False
        if len(spatial) == 2 and tuple(img.shape[:2]) == tuple(spatial):
            return np.moveaxis(img, -1, 0), False
    if img.shape[0] <= 4:
        return img, False
    if img.shape[-1] in (3, 4):
        return np.moveaxis(img, -1, 0), False
    return img[None], True


def to_rgb(image: Any, z: int | None = None, spatial: tuple[int, ...] | None = None) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8.

    Accepts ``(H, W)``, ``(C, H, W)``, ``(H, W, 3|4)``, ``(D, H, W)``, ``(C, D, H, W)``; floats in [0, 1] are kept,
    other ranges min-max scaled, uint8 used as is. One channel -> grey; two -> grey + blue (second channel, e.g.
    nuclei); three or more -> the first three as RGB.
    """
    img = _to_numpy(image)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    img, is3d = _image_layout(img, spatial)
    if is3d:
        zi = img.shape[1] // 2 if z is None else int(z)
        img = img[:, zi]
    if img.dtype == np.uint8:
        f = img.astype(np.float32) / 255.0
    elif np.issubdtype(img.dtype, np.integer):
        f = _scale01(img.astype(np.float32))
    else:
        f = _scale01(img)
    c = f.shape[0]
    if c == 1:
        rgb = np.repeat(f, 3, axis=0)
    elif c == 2:
        rgb = np.stack([f[0], f[0], np.maximum(f[0], f[1])])
    else:
        rgb = f[:3]
    return (np.clip(rgb, 0, 1) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def _boundaries(lab: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Inner boundary pixels of every instance (pixels whose 4-neighbour has another id), vectorised."""
    b = np.zeros(lab.shape, bool)
    fg = lab != 0
    b[1:, :] |= lab[1:, :] != lab[:-1, :]
    b[:-1, :] |= lab[:-1, :] != lab[1:, :]
    b[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    b[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    b &= fg
    if thickness > 1:
        from scipy import ndimage

        b = ndimage.binary_dilation(b, iterations=thickness - 1) & fg
    return b


def _slice(lab: np.ndarray | None, z: int | None) -> np.ndarray | None:
    if lab is None or lab.ndim == 2:
        return lab
    return lab[lab.shape[0] // 2 if z is None else int(z)]


def overlay_instances(
    image: Any,
    label: Any | None = None,
    pred: Any | None = None,
    points: Any | None = None,
    alpha: float = 0.35,
    z: int | None = None,
    fill: str | None = "auto",
    contour: int = 1,
    point_radius: float = 2.0,
    upscale: int = 1,
    gt_color: Sequence[int] = GT_COLOR,
    pred_color: Sequence[int] = PRED_COLOR,
    point_color: Sequence[int] = POINT_COLOR,
) -> np.ndarray:
    """Draw instances, contours and points over an image.

    Args:
        image: see :func:`to_rgb`.
        label: ground-truth instances (0 = background, -1 = ignore, greyed), same spatial shape as the image.
        pred: predicted instances (contours in ``pred_color``).
        points: ``(N, 2)`` (y, x) or ``(N, 3)`` (z, y, x); in 3D only points within half a slice of ``z`` are drawn.
        alpha: opacity of the instance fill.
        z: slice of 3D inputs (default: the middle one).
        fill: which map fills instances with palette colours: ``"label"``, ``"pred"``, ``None`` or ``"auto"``
            (the label if given, else the prediction).
        contour: contour thickness in pixels (at the original size).
        point_radius: dot radius in pixels (at the original size).
        upscale: integer nearest-neighbour magnification of the output (contours stay thin), for small images.

    Returns:
        ``(H * upscale, W * upscale, 3)`` uint8 RGB.
    """
    lab = None if label is None else _spatial_label(label)
    prd = None if pred is None else _spatial_label(pred, ndim=None if lab is None else lab.ndim)
    ref = lab if lab is not None else prd
    spatial = None if ref is None else tuple(ref.shape)
    rgb = to_rgb(image, z=z, spatial=spatial)
    H, W = rgb.shape[:2]
    is3d = ref is not None and ref.ndim == 3
    zi = None
    if is3d:
        zi = ref.shape[0] // 2 if z is None else int(z)
    lab2, prd2 = _slice(lab, zi), _slice(prd, zi)
    for name, m in (("label", lab2), ("pred", prd2)):
        if m is not None and m.shape != (H, W):
            raise ValueError(f"{name} spatial shape {m.shape} does not match the image {(H, W)}")
    up = max(1, int(upscale))
    if up > 1:
        rgb = np.repeat(np.repeat(rgb, up, 0), up, 1)
        lab2 = None if lab2 is None else np.repeat(np.repeat(lab2, up, 0), up, 1)
        prd2 = None if prd2 is None else np.repeat(np.repeat(prd2, up, 0), up, 1)
    out = rgb.astype(np.float32)
    if fill == "auto":
        fill = "label" if lab2 is not None else ("pred" if prd2 is not None else None)
    fmap = {"label": lab2, "pred": prd2, None: None}[fill]
    if fmap is not None:
        pos = fmap > 0
        if pos.any():
            out[pos] = (1 - alpha) * out[pos] + alpha * instance_colors(fmap[pos]).astype(np.float32)
        ign = fmap < 0
        if ign.any():
            out[ign] = 0.5 * out[ign] + 0.5 * np.asarray(IGNORE_COLOR, np.float32)
    thick = max(1, int(contour))
    if lab2 is not None:
        out[_boundaries(np.where(lab2 > 0, lab2, 0), thick)] = gt_color
    if prd2 is not None:
        out[_boundaries(np.where(prd2 > 0, prd2, 0), thick)] = pred_color
    if points is not None:
        pts = _to_numpy(points).astype(np.float64)
        pts = pts.reshape(-1, pts.shape[-1] if pts.ndim == 2 and pts.shape[-1] in (2, 3) else 2)
        if pts.shape[1] == 3:
            if zi is None:
                zi = 0
            pts = pts[np.abs(pts[:, 0] - zi) <= 0.5][:, 1:]
        pts = pts[np.isfinite(pts).all(1)]
        if pts.size:
            ys, xs = (pts[:, 0] + 0.5) * up - 0.5, (pts[:, 1] + 0.5) * up - 0.5
            r = max(point_radius * up, 0.8)
            ri = int(np.ceil(r))
            oy, ox = np.mgrid[-ri : ri + 1, -ri : ri + 1]
            disk = oy**2 + ox**2 <= r * r
            oy, ox = oy[disk], ox[disk]
            yy = (np.rint(ys)[:, None] + oy[None]).astype(np.int64).ravel()
            xx = (np.rint(xs)[:, None] + ox[None]).astype(np.int64).ravel()
            ok = (yy >= 0) & (yy < out.shape[0]) & (xx >= 0) & (xx < out.shape[1])
            out[yy[ok], xx[ok]] = point_color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: Any, label: Any | None = None, pred: Any | None = None,
                 points: Any | None = None, **kwargs: Any) -> Path:
    """Write :func:`overlay_instances` as a PNG (folders created); returns the path."""
    from PIL import Image

    arr = overlay_instances(image, label=label, pred=pred, points=points, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_panel(
    path: str | os.PathLike,
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    pad: int = 4,
    background: int = 255,
) -> Path:
    """Write images side by side (a grid of ``ncols`` columns) with an optional title above each, as a PNG.

    Args:
        images: RGB ``(H, W, 3)`` uint8 arrays (e.g. from :func:`overlay_instances`) or anything :func:`to_rgb`
            accepts; sizes may differ (cells are padded).
        titles: one string per image.
    """
    from PIL import Image, ImageDraw

    tiles = []
    for im in images:
        a = _to_numpy(im)
        if not (a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8):
            a = to_rgb(a)
        tiles.append(a)
    if not tiles:
        raise ValueError("save_panel needs at least one image")
    if titles is not None and len(titles) != len(tiles):
        raise ValueError(f"{len(titles)} titles for {len(tiles)} images")
    n = len(tiles)
    ncols = n if ncols is None else max(1, min(int(ncols), n))
    nrows = (n + ncols - 1) // ncols
    th = 14 if titles else 0
    ch = max(t.shape[0] for t in tiles) + th
    cw = max(t.shape[1] for t in tiles)
    canvas = np.full((nrows * ch + (nrows + 1) * pad, ncols * cw + (ncols + 1) * pad, 3), background, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        y0, x0 = pad + r * (ch + pad) + th, pad + c * (cw + pad)
        canvas[y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]] = t
    img = Image.fromarray(canvas)
    if titles:
        draw = ImageDraw.Draw(img)
        for i, title in enumerate(titles):
            r, c = divmod(i, ncols)
            draw.text((pad + c * (cw + pad) + 2, pad + r * (ch + pad)), str(title), fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
