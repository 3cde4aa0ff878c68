"""Instance-aware pseudo-label selection and cross-teaching targets (monai_ext.pseudo.ipl)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monai_ext.pseudo.ipl import merge_stats, point_targets, pseudo_points_from_peaks, select_instances, \
    supervised_targets
from monai_ext.transforms.em import IGNORE_INDEX, points_to_heatmap

CENTRES = [(12, 12), (12, 44), (44, 12), (44, 44), (28, 28)]
HEIGHTS = [0.9, 0.8, 0.6, 0.4, 0.2]


def _teacher(size: int = 56) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five confident discs (ids 1..5), heatmap peaks of decreasing height, an uncertain ring around disc 1."""
    yy, xx = np.mgrid[:size, :size]
    prob = np.full((size, size), 0.02, np.float32)
    gt = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate(CENTRES, start=1):
        d = np.hypot(yy - cy, xx - cx)
        prob[d < 5] = 0.97
        prob[(d >= 5) & (d < 6) & (i == 1)] = 0.5
        gt[d < 5] = i
    heat = np.zeros((size, size), np.float32)
    for (cy, cx), h in zip(CENTRES, HEIGHTS):
        heat += h * points_to_heatmap(np.array([[cy, cx]], np.float32), (size, size), sigma=2.0)
    return prob, heat, gt


def test_points_keep_components_and_ratio_adds_peaks() -> None:
    prob, heat, gt = _teacher()
    pts = np.array([[44, 44]], np.float32)  # a point on the weakest-but-one disc
    r0 = select_instances(prob, heat, pts, ratio=0.0, tau=0.9, sigma=2.0, count=5)
    assert set(np.unique(gt[r0.seg == 1])) == {4}
    assert r0.stats["kept_by_points"] == 1 and r0.stats["peaks_added"] == 0
    # unselected confident components are ignored, not background
    assert (r0.seg[gt == 1] == IGNORE_INDEX).all()
    assert (r0.seg[prob < 0.1] == 0).all()
    # r = 0.4 of N = 5 -> ceil(2) peaks, the two highest outside the kept component (discs 1 and 2)
    r1 = select_instances(prob, heat, pts, ratio=0.4, tau=0.9, sigma=2.0, count=5)
    assert set(np.unique(gt[r1.seg == 1])) == {1, 2, 4}
    assert r1.stats["peaks_added"] == math.ceil(5 * 0.4)
    # the point mask marks only the point-verified instance
    assert set(np.unique(gt[r1.point_mask > 0])) == {4}


def test_cross_teaching_detection_targets_at_pseudo_centroids() -> None:
    prob, heat, gt = _teacher()
    res = select_instances(prob, heat, np.array([[44, 44]], np.float32), ratio=0.4, tau=0.9, sigma=2.0, count=5)
    for i in (1, 2, 4):
        cy, cx = CENTRES[i - 1]
        assert res.det[cy, cx] == pytest.approx(1.0, abs=1e-3)
    assert res.det[CENTRES[2]] < 1e-3 and res.det[CENTRES[4]] < 1e-3
    # weights: teacher-detection background is supervised, the point gets the extra point weight
    assert res.det_weight[0, 0] == 1.0
    assert res.det_weight[44, 44] == pytest.approx(4.0, abs=1e-3)
    # near the point (radius 16) the teacher background is not trusted: weight only where the target is > 0
    assert res.det_weight[44, 30] == 0.0


def test_uncovered_points_get_prior_shape_and_ignore_zone() -> None:
    prob, heat, _ = _teacher()
    res = select_instances(prob, heat, np.array([[28, 5]], np.float32), ratio=0.0, tau=0.9, sigma=2.0,
                           prior_radius=3, ignore_radius=8)
    assert res.stats["uncovered_points"] == 1
    assert res.seg[28, 5] == 1 and res.seg[28, 8] == 1 and res.point_mask[28, 5] == 1
    assert res.seg[28, 10] == IGNORE_INDEX and res.seg[28, 20] == 0
    assert res.det[28, 5] == pytest.approx(1.0, abs=1e-3)


def test_small_components_and_invalid_tau() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[5, 5] = prob[5, 6] = 0.99
    res = select_instances(prob, np.zeros_like(prob), np.array([[5, 5]], np.float32), 0.0, min_size=4)
    assert res.stats["kept_by_points"] == 0 and res.stats["uncovered_points"] == 1
    with pytest.raises(ValueError):
        select_instances(prob, prob, np.zeros((0, 2)), 0.0, tau=0.3)


def test_teacher_free_and_supervised_targets() -> None:
    pt = point_targets(np.array([[10, 10]], np.float32), (32, 32), sigma=2.0, prior_radius=2)
    assert pt.seg[10, 10] == 1 and pt.seg[0, 0] == IGNORE_INDEX
    assert pt.det_weight[0, 0] == 0 and pt.det_weight[10, 10] > 3
    assert select_instances(None, np.zeros((32, 32)), np.array([[10, 10]]), 0.5).seg[10, 10] == 1
    _, _, gt = _teacher()
    sup = supervised_targets(gt, sigma=2.0)
    assert (sup.seg == (gt > 0)).all() and sup.stats["components"] == 5


def test_uda_pseudo_points_from_peaks() -> None:
    prob, heat, gt = _teacher()
    pts = pseudo_points_from_peaks(prob, heat, ratio=0.4, tau=0.9, sigma=2.0, peak=1.0, peak_threshold=0.1,
                                   count_mode="heatmap")
    # count estimate ~ 0.9+0.8+0.6+0.4+0.2 = 2.9 -> ceil(2.9 * 0.4) = 2 highest peaks
    assert len(pts) == 2
    assert sorted(gt[pts[:, 0].astype(int), pts[:, 1].astype(int)].tolist()) == [1, 2]


def test_merge_stats() -> None:
    s = merge_stats([{"points": 2.0, "ignored_fraction": 0.2}, {"points": 3.0, "ignored_fraction": 0.4}])
    assert s["points"] == 5.0 and s["ignored_fraction"] == pytest.approx(0.3) and s["slices"] == 2


def test_uda_pseudo_points_with_a_flat_heatmap() -> None:
    prob, heat, gt = _teacher()
    pts = pseudo_points_from_peaks(prob, np.zeros_like(heat), ratio=0.4, tau=0.9, count_mode="components")
    assert len(pts) == 2  # ceil(5 * 0.4), ranked by confidence when the heatmap is flat
    assert (gt[pts[:, 0].astype(int), pts[:, 1].astype(int)] > 0).all()
    assert len(pseudo_points_from_peaks(prob, np.zeros_like(heat), ratio=0.4, peak_threshold=0.1)) == 0


def test_rank_by_area_prefers_large_components() -> None:
    from monai_ext.pseudo.ipl import component_scores

    comps = np.zeros((20, 40), np.int32)
    comps[2:4, 2:4] = 1  # small blob with a strong centre
    comps[5:15, 10:30] = 2  # large component with a weaker centre
    heat = np.zeros((20, 40), np.float32)
    heat[3, 3], heat[10, 20] = 0.9, 0.6
    prob = np.ones_like(heat)
    s_h, best = component_scores(comps, 2, heat, prob, "heatmap")
    s_a, _ = component_scores(comps, 2, heat, prob, "heatmap_area")
    assert s_h[1] > s_h[2] and s_a[2] > s_a[1] and best[1:].tolist() == pytest.approx([0.9, 0.6])
    with pytest.raises(ValueError):
        component_scores(comps, 2, heat, prob, "size")


def test_bg_quantile_calibrates_an_under_confident_background() -> None:
    from monai_ext.pseudo.ipl import background_mask

    prob, heat, gt = _teacher()
    rng = np.random.default_rng(0)
    # an under-confident teacher: plain background at p ~ 0.15-0.35 instead of ~0, the discs still at 0.97
    prob = np.where(gt > 0, prob, rng.uniform(0.15, 0.35, prob.shape)).astype(np.float32)
    pts = np.array([[44, 44]], np.float32)
    paper = select_instances(prob, heat, pts, ratio=0.0, tau=0.9, sigma=2.0, count=5)
    assert not (paper.seg == 0).any()  # p < 1 - tau labels nothing: stage 2 would see foreground only
    cal = select_instances(prob, heat, pts, ratio=0.0, tau=0.9, sigma=2.0, count=5, bg_quantile=0.8)
    bg = cal.seg == 0
    assert 0.7 < bg[gt == 0].mean() < 0.9  # ~ the 0.8 quantile of the predicted background
    assert not (bg & (gt > 0)).any()  # never on an object
    # the paper's rule is kept where it already labels pixels, and the threshold never exceeds p = 0.5
    assert background_mask(np.array([0.05, 0.3, 0.6], np.float32), 0.9, 0.0).tolist() == [True, False, False]
    assert background_mask(np.array([0.05, 0.3, 0.6], np.float32), 0.9, 1.0).tolist() == [True, False, False]
    with pytest.raises(ValueError):
        background_mask(prob, 0.9, 1.5)


def test_peak_reference_points_calibrates_a_weak_target_heatmap() -> None:
    """A teacher whose target heatmap ranks the instances right but peaks far below ``peak`` (domain shift): the
    absolute threshold adds nothing, the point-calibrated one adds the best-ranked components."""
    prob, heat, gt = _teacher()
    weak = 0.02 * heat  # peaks 0.018 .. 0.004, all under peak_threshold = 0.05
    pts = np.array([[44, 44]], np.float32)  # point-hit disc 4: best peak 0.008
    absolute = select_instances(prob, weak, pts, ratio=0.4, tau=0.9, sigma=2.0, count=5, peak_threshold=0.05)
    assert absolute.stats["peaks_added"] == 0
    calibrated = select_instances(prob, weak, pts, ratio=0.4, tau=0.9, sigma=2.0, count=5, peak_threshold=0.05,
                                  peak_reference="points")
    assert calibrated.stats["peaks_added"] == 2
    assert set(np.unique(gt[calibrated.seg == 1])) == {1, 2, 4}
    # a component far below the point-verified peaks stays out (0.004 < 0.6 x 0.008)
    strict = select_instances(prob, weak, pts, ratio=1.0, tau=0.9, sigma=2.0, count=5, peak_threshold=0.6,
                              peak_reference="points")
    assert 5 not in set(np.unique(gt[strict.seg == 1]))
    # no point-hit component: falls back to the absolute reference
    none_hit = select_instances(prob, weak, np.array([[2, 2]], np.float32), ratio=0.4, tau=0.9, sigma=2.0, count=5,
                                peak_threshold=0.05, peak_reference="points")
    assert none_hit.stats["peaks_added"] == 0
    with pytest.raises(ValueError, match="peak_reference"):
        select_instances(prob, weak, pts, ratio=0.4, count=5, peak_reference="bogus")
