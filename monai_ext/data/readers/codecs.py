# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Pixel encodings shared by the readers and the writers (one definition, so they always round-trip).

- **COIN instance PNG**: an RGB PNG whose instance id is ``B * 256 + G`` (the COIN repository writes it with OpenCV,
  i.e. in BGR order; with an RGB reader that is ``arr[..., 2] * 256 + arr[..., 1]``). The red channel is 0, except
  that ``(255, 255, 255)`` marks ignore pixels (``-1`` in our instance maps). Ids 0..65535 round-trip; the public
  COIN code keeps only one byte and wraps ids above 255, which this encoding does not.
- **CVPPP colour-coded label PNG**: a palette ("P" mode) PNG whose pixel index is the leaf id, with the fixed palette
  :func:`cvppp_palette` (the PASCAL-VOC bit-interleaving colour map: index 0 is black, all 256 colours distinct).
  RGB-converted copies are decoded through the same palette.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "COIN_IGNORE_RGB",
    "COIN_MAX_ID",
    "encode_coin_mask",
    "decode_coin_mask",
    "cvppp_palette",
    "decode_palette_rgb",
]

COIN_IGNORE_RGB = (255, 255, 255)
COIN_MAX_ID = 65535


def encode_coin_mask(label: np.ndarray) -> np.ndarray:
    """Encode an instance map ``(H, W)`` (ids 0..65535, -1 = ignore) as a COIN RGB image ``(H, W, 3)`` uint8."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"COIN masks are 2D, got shape {label.shape}")
    if label.size and (label.min() < -1 or label.max() > COIN_MAX_ID):
        raise ValueError(f"COIN masks hold ids in [-1, {COIN_MAX_ID}], got [{label.min()}, {label.max()}]")
    ids = np.clip(label, 0, None).astype(np.int64)
    rgb = np.zeros(label.shape + (3,), np.uint8)
    rgb[..., 1] = ids % 256
    rgb[..., 2] = ids // 256
    rgb[label == -1] = COIN_IGNORE_RGB
    return rgb


def decode_coin_mask(rgb: np.ndarray) -> np.ndarray:
    """Decode a COIN RGB(A) mask ``(H, W, 3|4)`` into an int32 instance map (ignore -> -1)."""
    rgb = np.asarray(rgb)
    ids = rgb[..., 2].astype(np.int32) * 256 + rgb[..., 1].astype(np.int32)
    ignore = np.all(rgb[..., :3] == 255, axis=-1)
    ids[ignore] = -1
    return ids


def cvppp_palette() -> np.ndarray:
    """The fixed 256-colour palette of our CVPPP label PNGs, ``(256, 3)`` uint8; index 0 is black.

    Bit ``j`` of the index goes to bit ``7 - j // 3`` of channel ``j % 3`` (the PASCAL-VOC colour map), so every
    index has its own colour.
    """
    idx = np.arange(256, dtype=np.int64)
    pal = np.zeros((256, 3), np.int64)
    for j in range(8):  # 8 bits of the index, not a pixel loop
        for c in range(3):
            pal[:, c] |= ((idx >> (3 * j + c)) & 1) << (7 - j)
    return pal.astype(np.uint8)


def decode_palette_rgb(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """Map an RGB label image ``(H, W, 3)`` to ids.

    Returns ``(ids, exact)``: when every colour is in :func:`cvppp_palette` the ids are the palette indices
    (``exact=True``); otherwise each distinct non-black colour gets an id 1..K in sorted colour order.
    """
    rgb = np.asarray(rgb)[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = cvppp_palette().astype(np.int64)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_code)
    pos = np.clip(np.searchsorted(pal_code[order], code), 0, 255)
    hit = pal_code[order][pos] == code
    if bool(hit.all()):
        return order[pos].astype(np.int32), True
    colours, inverse = np.unique(code, return_inverse=True)
    ids = inverse.reshape(code.shape).astype(np.int32)
    if colours[0] != 0:  # no black: every colour is an object
        ids += 1
    return ids, False
