"""EM transforms: Gaussian heatmaps, point zones, instance centres / targets, random slices of volumes."""

from __future__ import annotations

import numpy as np
import pytest

from monai_ext.errors import DataError
from monai_ext.transforms.em import (
    IGNORE_INDEX,
    InstanceTargetsEMd,
    PointsToHeatmapd,
    RandSliced,
    instance_centres,
    instance_targets,
    kernel_sum,
    point_zone,
    points_to_heatmap,
)


def test_heatmap_peaks_and_count() -> None:
    pts = np.array([[10.0, 12.0], [40.0, 30.0], [-5.0, 3.0]], np.float32)  # the last one is outside
    hm = points_to_heatmap(pts, (64, 64), sigma=3.0, peak=2.0)
    assert hm.dtype == np.float32 and hm.shape == (64, 64)
    assert hm[10, 12] == pytest.approx(2.0, rel=1e-4) and hm[40, 30] == pytest.approx(2.0, rel=1e-4)
    assert hm.sum() / kernel_sum(3.0, 2.0) == pytest.approx(2.0, rel=1e-3)
    assert points_to_heatmap(np.zeros((0, 2)), (8, 8)).sum() == 0


def test_heatmap_volume_is_per_slice() -> None:
    hm = points_to_heatmap(np.array([[1, 5, 5]], np.float32), (3, 16, 16), sigma=2.0)
    assert hm[1, 5, 5] == pytest.approx(1.0, rel=1e-4)
    assert hm[0].max() == 0 and hm[2].max() == 0


def test_heatmap_rejects_nan() -> None:
    with pytest.raises(DataError):
        points_to_heatmap(np.array([[np.nan, 1.0]]), (8, 8))


def test_point_zone_ellipse() -> None:
    z = point_zone(np.array([[20.0, 20.0]]), (40, 40), (3.0, 6.0))
    assert z[20, 26] and not z[20, 27] and z[23, 20] and not z[24, 20]
    assert not point_zone(np.zeros((0, 2)), (5, 5), 2).any()


def test_instance_centres_modes() -> None:
    lab = np.zeros((30, 30), np.int32)
    lab[5:10, 5:15] = 3
    lab[20:28, 20:24] = 7
    c = instance_centres(lab)
    np.testing.assert_allclose(c, [[7.0, 9.5], [23.5, 21.5]])
    inside = instance_centres(lab, "inside").astype(int)
    assert lab[inside[:, 0], inside[:, 1]].tolist() == [3, 7]
    c3 = instance_centres(np.stack([lab, np.zeros_like(lab)]))
    assert c3.shape == (2, 3) and set(c3[:, 0]) == {0.0}


def test_instance_targets_and_transform() -> None:
    lab = np.zeros((1, 32, 32), np.int32)
    lab[0, 4:12, 4:12] = 1
    lab[0, 0, 0] = -1
    seg, det, w = instance_targets(lab[0], sigma=2.0)
    assert seg[0, 0] == IGNORE_INDEX and seg[8, 8] == 1 and seg[20, 20] == 0 and w[0, 0] == 0
    assert det.max() == pytest.approx(1.0, rel=1e-4)
    d = InstanceTargetsEMd("label", sigma=2.0)({"label": lab})
    assert d["seg"].shape == d["det"].shape == d["det_weight"].shape == (1, 32, 32)
    with pytest.raises(DataError):
        InstanceTargetsEMd("label")({"label": lab[0]})


def test_points_to_heatmap_d() -> None:
    d = PointsToHeatmapd(sigma=2.0)({"image": np.zeros((1, 20, 20)), "points": np.array([[5, 5]], np.float32)})
    assert d["det"].shape == (1, 20, 20) and d["det"][0, 5, 5] == pytest.approx(1.0, rel=1e-4)


def test_rand_slice_moves_points() -> None:
    img = np.arange(4 * 8 * 8, dtype=np.float32).reshape(1, 4, 8, 8)
    pts = np.array([[2, 3, 4], [2, 1, 1], [0, 5, 5]], np.float32)
    t = RandSliced(keys=["image"], with_points_only=True)
    t.set_random_state(0)
    for _ in range(5):
        d = t({"image": img, "points": pts})
        z = int(d["image"][0, 0, 0] // 64)
        assert d["image"].shape == (1, 8, 8) and z in (0, 2)
        assert len(d["points"]) == (2 if z == 2 else 1) and d["points"].shape[1] == 2
    with pytest.raises(DataError):
        RandSliced(keys=["image"])({"image": img[:, 0]})
