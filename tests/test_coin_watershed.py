"""Watershed semantic -> instance splitting (monai_ext.postprocess.watershed), 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest

from monai_ext.errors import DataError
from monai_ext.postprocess.watershed import (
    distance_watershed,
    fill_instance_holes,
    marker_watershed,
    relabel_sequential,
    remove_small_instances,
)


def _discs(shape=(64, 96), centres=((32, 30), (32, 52)), r=12.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = i
    return lab


def test_distance_watershed_splits_touching_discs() -> None:
    lab = _discs()
    out = distance_watershed(lab > 0, min_distance=6)
    assert out.dtype == np.int32 and out.max() == 2
    # each disc is mostly one instance
    for i in (1, 2):
        ids, cnt = np.unique(out[lab == i], return_counts=True)
        assert cnt.max() / cnt.sum() > 0.9


def test_distance_watershed_keeps_components_without_peaks() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:7, 5:30] = True  # thin line: a plateau, peak footprint larger than the object
    mask[20:34, 20:34] = True
    out = distance_watershed(mask, min_distance=12)
    assert (out[mask] > 0).all(), "no foreground pixel may be lost"
    assert out.max() == 2


def test_distance_watershed_3d_and_min_size() -> None:
    zz, yy, xx = np.mgrid[:20, :30, :40]
    ball = ((zz - 10) ** 2 + (yy - 15) ** 2 + (xx - 12) ** 2 <= 36) | ((zz - 10) ** 2 + (yy - 15) ** 2 + (xx - 24) ** 2 <= 36)
    speck = np.zeros_like(ball)
    speck[1, 1, 1] = True
    out = distance_watershed(ball | speck, min_distance=3, min_size=5)
    assert out.shape == ball.shape and out.max() == 2 and out[1, 1, 1] == 0


def test_marker_watershed_uses_edges() -> None:
    lab = _discs(centres=((32, 30), (32, 50)), r=12.0)
    fg = (lab > 0).astype(np.float32)
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(lab, mode="inner").astype(np.float32)
    out = marker_watershed(fg, edge, edge_threshold=0.5, min_marker_size=4, min_size=4)
    assert out.max() == 2
    # without edges the two overlapping discs form one core -> one instance
    merged = marker_watershed(fg, np.zeros_like(fg), min_marker_size=4, min_size=4)
    assert merged.max() == 1
    # distance splitting of the cores recovers them
    split = marker_watershed(fg, np.zeros_like(fg), min_marker_size=4, min_size=4, core_min_distance=6)
    assert split.max() == 2


def test_marker_watershed_errors_and_fallback() -> None:
    with pytest.raises(DataError):
        marker_watershed(np.zeros((4, 4)), np.zeros((5, 5)))
    with pytest.raises(DataError):
        marker_watershed(np.zeros((1, 4, 4, 4)))
    assert marker_watershed(np.zeros((8, 8)), np.zeros((8, 8))).max() == 0
    lab = _discs()
    assert marker_watershed((lab > 0).astype(float), None, fallback_min_distance=6).max() == 2


def test_relabel_remove_small_fill_holes() -> None:
    lab = np.array([[0, 5, 5, 0], [9, 9, 0, -1], [0, 0, 7, 0]])
    r = relabel_sequential(lab)
    assert set(np.unique(r)) == {-1, 0, 1, 2, 3} and r[1, 3] == -1
    s = remove_small_instances(lab, 2)
    assert (s[2, 2] == 0) and s.max() == 2
    ring = np.zeros((9, 9), np.int32)
    ring[2:7, 2:7] = 3
    ring[4, 4] = 0
    assert fill_instance_holes(ring)[4, 4] == 3


def test_otsu_edge_threshold_survives_an_overconfident_edge_head() -> None:
    """Two touching nuclei whose edge head says 0.45 inside and 0.95 on the boundaries (a Dice-trained head
    over-predicts thin edges): a fixed cut at 0.35 leaves no core and merges them; Otsu's cut splits them."""
    from monai_ext.postprocess.watershed import resolve_edge_threshold

    yy, xx = np.mgrid[:40, :60]
    a = (yy - 20) ** 2 + (xx - 20) ** 2 < 12 ** 2
    b = (yy - 20) ** 2 + (xx - 41) ** 2 < 12 ** 2
    gt = np.zeros((40, 60), np.int32)
    gt[a], gt[b] = 1, 2
    fg = (a | b).astype(np.float32)
    from skimage.segmentation import find_boundaries

    edge = np.where(find_boundaries(gt, mode="thick"), 0.95, 0.45).astype(np.float32)
    fixed = marker_watershed(fg, edge, edge_threshold=0.35, min_marker_size=4, min_size=4)
    otsu = marker_watershed(fg, edge, edge_threshold="otsu", min_marker_size=4, min_size=4)
    assert fixed.max() == 1 and otsu.max() == 2
    assert 0.45 <= resolve_edge_threshold("otsu", edge, fg > 0) < 0.95
    assert resolve_edge_threshold("otsu", np.full((4, 4), 0.3), np.ones((4, 4), bool)) == 0.5  # constant map
    with pytest.raises(ValueError, match="otsu"):
        marker_watershed(fg, edge, edge_threshold="mean")
