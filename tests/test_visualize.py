# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Overlay pictures: colours, contours, points, odd inputs (empty, huge ids, 3D, channel-last, tensors), PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_ext.visualize import (
    GT_COLOR,
    POINT_COLOR,
    PRED_COLOR,
    instance_colors,
    overlay_instances,
    save_overlay,
    save_panel,
    to_rgb,
)


def _label(shape=(40, 50)):
    lab = np.zeros(shape, np.int32)
    lab[5:15, 5:15] = 1
    lab[5:15, 15:25] = 2**40 % (2**31 - 1)  # touching, large id
    lab[25:35, 30:45] = 7
    return lab


def _has(rgb, color):
    return bool(np.all(rgb == np.asarray(color, np.uint8), axis=-1).any())


def test_overlay_label_pred_points():
    img = np.full((1, 40, 50), 0.5, np.float32)
    lab = _label()
    pred = np.roll(lab, 2, axis=1)
    out = overlay_instances(img, lab[None], pred=pred, points=np.array([[20.0, 20.0]], np.float32))
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    assert _has(out, GT_COLOR) and _has(out, PRED_COLOR) and _has(out, POINT_COLOR)
    assert tuple(out[20, 20]) == POINT_COLOR
    # filled instances change the grey, background stays grey
    assert tuple(out[0, 0]) == (128, 128, 128) and tuple(out[30, 37]) != (128, 128, 128)
    # the shared border of touching instances is drawn
    assert tuple(out[10, 14]) == GT_COLOR or tuple(out[10, 15]) == GT_COLOR


def test_instance_colors_stable_and_varied():
    ids = np.array([1, 2, 3, 2**40, 2**62])
    a, b = instance_colors(ids), instance_colors(ids)
    assert a.shape == (5, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert len({tuple(c) for c in instance_colors(np.arange(1, 30))}) > 15


def test_empty_and_image_only():
    img = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    out = overlay_instances(img, np.zeros((1, 20, 30), np.int32), points=np.zeros((0, 2), np.float32))
    assert np.array_equal(out, to_rgb(img))
    assert overlay_instances(img).shape == (20, 30, 3)
    hwc = (img.transpose(1, 2, 0) * 255).astype(np.uint8)  # channel-last uint8 is accepted too
    assert np.abs(overlay_instances(hwc, np.zeros((20, 30), np.int32)).astype(int) - to_rgb(img)).max() <= 1


def test_volume_takes_middle_or_given_slice():
    vol = np.zeros((1, 5, 20, 20), np.float32)
    lab = np.zeros((1, 5, 20, 20), np.int32)
    lab[0, 2, 5:10, 5:10] = 3
    lab[0, 4, 12:18, 12:18] = 4
    mid = overlay_instances(vol, lab, points=np.array([[2, 15, 3], [0, 2, 2]], np.float32))
    assert _has(mid[:12, :12], GT_COLOR) and not _has(mid[11:, 11:], GT_COLOR)
    assert tuple(mid[15, 3]) == POINT_COLOR and tuple(mid[2, 2]) != POINT_COLOR  # z=0 point is not on slice 2
    last = overlay_instances(vol[0], lab[0], z=4)  # (D, H, W) without channel
    assert _has(last[11:, 11:], GT_COLOR)


def test_two_channels_and_tensors_and_ranges():
    img = torch.zeros(2, 16, 16)
    img[1, 4:8, 4:8] = 1.0  # nuclei channel shows up blue
    rgb = overlay_instances(img, torch.zeros(1, 16, 16, dtype=torch.int64))
    assert rgb[5, 5, 2] == 255 and rgb[5, 5, 0] == 0
    wide = to_rgb(np.linspace(-3, 7, 100, dtype=np.float32).reshape(10, 10))  # outside [0, 1]: min-max scaled
    assert wide.min() == 0 and wide.max() == 255
    ign = overlay_instances(np.zeros((8, 8), np.float32), -np.ones((8, 8), np.int32))
    assert tuple(ign[4, 4]) == (64, 64, 64)


def test_upscale_and_shape_mismatch():
    out = overlay_instances(np.zeros((10, 12), np.float32), _label((10, 12)), upscale=3)
    assert out.shape == (30, 36, 3)
    with pytest.raises(ValueError, match="does not match"):
        overlay_instances(np.zeros((10, 12), np.float32), np.zeros((10, 13), np.int32))


def test_save_overlay_and_panel(tmp_path):
    img = np.full((1, 24, 32), 0.3, np.float32)
    p = save_overlay(tmp_path / "a" / "o.png", img, _label((24, 32)))
    arr = np.asarray(Image.open(p))
    assert arr.shape == (24, 32, 3) and np.array_equal(arr, overlay_instances(img, _label((24, 32))))
    q = save_panel(tmp_path / "panel.png", [arr, np.zeros((10, 10), np.float32), arr], ["a", "b", "c"], ncols=2)
    pan = np.asarray(Image.open(q))
    assert pan.ndim == 3 and pan.shape[1] >= 2 * 32 and pan.shape[0] >= 2 * 24
    with pytest.raises(ValueError):
        save_panel(tmp_path / "x.png", [arr], ["a", "b"])
