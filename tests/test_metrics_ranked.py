"""Tests of monai_ext.metrics.ranked (CKS ranked AP / mAP and area-weighted Dice) against plain LACSS-style code."""

from __future__ import annotations

import numpy as np
import pytest

from monai_ext.errors import DataError
from monai_ext.metrics import (
    COCO_THRESHOLDS,
    RankedAP,
    area_weighted_instance_dice,
    compute_overlap,
    instance_dice,
    ranked_average_precision,
    ranked_map,
    scores_for,
)

# --------------------------------------------------------------------------------------------------------
# plain definitions, following LACSS metrics/ranked.py and metrics/dice.py step by step
# --------------------------------------------------------------------------------------------------------


def dense_tables(gt: np.ndarray, pred: np.ndarray):
    g_ids = [int(i) for i in np.unique(gt) if i]
    p_ids = [int(i) for i in np.unique(pred) if i]
    inter = np.array([[np.sum((pred == p) & (gt == g)) for g in g_ids] for p in p_ids], dtype=float).reshape(
        len(p_ids), len(g_ids)
    )
    pa = np.array([np.sum(pred == p) for p in p_ids], dtype=float)
    ga = np.array([np.sum(gt == g) for g in g_ids], dtype=float)
    iou = inter / np.maximum(pa[:, None] + ga[None, :] - inter, 1)
    return p_ids, g_ids, inter, iou, pa, ga


def plain_indicators(iou_sorted: np.ndarray, th: float) -> list[int]:
    """LACSS _unique_location_matching: rows sorted by score, matched columns set to -1."""
    sim = iou_sorted.copy()
    out = []
    for row in sim:
        if row.size == 0:
            out.append(0)
            continue
        j = row.argmax()
        if row[j] > th:
            out.append(1)
            sim[:, j] = -1
        else:
            out.append(0)
    return out


def plain_ranked_ap(images, thresholds) -> np.ndarray:
    """LACSS AP.update / AP.compute (coco_style=False) with a stable sort."""
    cells = 0
    all_scores = []
    inds = [[] for _ in thresholds]
    for gt, pred, scores in images:
        p_ids, g_ids, _, iou, _, _ = dense_tables(gt, pred)
        s = np.array([scores[p] for p in p_ids])
        order = np.argsort(-s, kind="stable")
        cells += len(g_ids)
        all_scores.append(s[order])
        for k, th in enumerate(thresholds):
            inds[k] += plain_indicators(iou[order], th)
    scores = np.concatenate(all_scores)
    order = np.argsort(-scores, kind="stable")
    out = []
    for ind in inds:
        ind = np.array(ind)[order]
        p_k = np.cumsum(ind) / (np.arange(len(ind)) + 1)
        out.append(np.sum(p_k[ind == 1]) / cells)
    return np.array(out)


def plain_pooled_dice(pairs) -> float:
    """LACSS Dice.update per image, Dice.compute over all."""
    pa_all, ga_all, pd_all, gd_all = [], [], [], []
    for gt, pred in pairs:
        _, _, its, _, pa, ga = dense_tables(gt, pred)
        pred_dice = np.zeros(len(pa))
        gt_dice = np.zeros(len(ga))
        if len(pa) and len(ga):
            pred_dice = its.max(axis=1) * 2 / (pa + ga[its.argmax(axis=1)])
            gt_dice = its.max(axis=0) * 2 / (ga + pa[its.argmax(axis=0)])
        pa_all.append(pa)
        ga_all.append(ga)
        pd_all.append(pred_dice)
        gd_all.append(gt_dice)
    pa, ga = np.concatenate(pa_all), np.concatenate(ga_all)
    return ((pa / pa.sum() * np.concatenate(pd_all)).sum() + (ga / ga.sum() * np.concatenate(gd_all)).sum()) / 2


def blobs(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.int32)
    for i in rng.choice(np.arange(1, 5000), size=n, replace=False):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [min(s, a + int(rng.integers(2, max(3, s // 2)))) for a, s in zip(lo, shape)]
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
    return lab


def random_dataset(seed: int, n_images: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_images):
        shape = (int(rng.integers(10, 25)), int(rng.integers(10, 25)))
        gt = blobs(rng, shape, int(rng.integers(1, 12)))
        if rng.random() < 0.5:
            pred = np.roll(gt, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
            pred = np.where(blobs(rng, shape, 3) > 0, blobs(rng, shape, 4), pred)
        else:
            pred = blobs(rng, shape, int(rng.integers(0, 12)))
        scores = {int(i): float(rng.random()) for i in np.unique(pred) if i}
        out.append((gt, pred, scores))
    return out


# --------------------------------------------------------------------------------------------------------
# hand-worked cases
# --------------------------------------------------------------------------------------------------------

GT1 = np.array([[1, 1, 2, 2, 0, 0, 0, 0], [1, 1, 2, 2, 0, 0, 0, 0]])
PRED1 = np.array([[1, 1, 2, 0, 0, 0, 3, 3], [1, 1, 2, 0, 0, 0, 3, 3]])  # 1 = GT 1, 2 = half of GT 2, 3 = FP
SCORES1 = {1: 0.9, 2: 0.8, 3: 0.95}
GT2 = np.full((2, 2), 5)
PRED2 = np.full((2, 2), 9)
SCORES2 = {9: 0.7}
HAND = [(GT1, PRED1, SCORES1), (GT2, PRED2, SCORES2)]


def test_hand_case_ranked_ap():
    # pooled by score: 3 (FP) .95, 1 (TP) .9, 2 (IoU = .5: FP when strict) .8, 9 (TP) .7; C = 3 GT
    ap = ranked_average_precision(HAND, thresholds=[0.5, 0.75, 1.0])
    np.testing.assert_allclose(ap, [(1 / 2 + 2 / 4) / 3, (1 / 2 + 2 / 4) / 3, 0.0])
    ap_ge = ranked_average_precision(HAND, thresholds=[0.5], strict=False)
    np.testing.assert_allclose(ap_ge, [(1 / 2 + 2 / 3 + 3 / 4) / 3])
    # dropping the FP by score raises AP: 1 (TP), 2 (FP), 9 (TP) -> (1 + 2/3) / 3
    np.testing.assert_allclose(ranked_average_precision(HAND, [0.5], min_score=0.5 - 1e-9)[0], (1 / 2 + 2 / 4) / 3)
    np.testing.assert_allclose(
        ranked_average_precision([(GT1, PRED1, {1: 0.9, 2: 0.8, 3: 0.1}), HAND[1]], [0.5], min_score=0.5)[0],
        (1 + 2 / 3) / 3,
    )
    assert ranked_map(HAND) == pytest.approx(float(np.mean(ranked_average_precision(HAND))))


def test_greedy_order_below_half():
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[7, 7, 8, 8]])  # both IoU 0.5 with GT 1
    acc = RankedAP([0.2])
    ind = acc.update(gt, pred, {7: 0.6, 8: 0.9})
    assert ind[:, 0].tolist() == [False, True]  # the higher score takes the GT
    np.testing.assert_allclose(acc.compute(), [1.0])  # TP first: P_1 = 1, C = 1
    # a prediction covering two GT takes the one of higher IoU
    gt = np.array([[1, 1, 1, 2, 2, 2, 2, 2]])
    pred = np.array([[4, 4, 4, 4, 4, 4, 0, 0]])
    ind = RankedAP([0.1]).update(gt, pred, np.array([0.0, 0, 0, 0, 0.5]))
    assert ind.tolist() == [[True]]


def test_ties_are_broken_stably():
    ov = compute_overlap(GT1, PRED1)
    acc = RankedAP([0.5])
    acc.update(ov, scores={1: 0.5, 2: 0.5, 3: 0.5})  # order: 1 (TP), 2 (FP), 3 (FP)
    np.testing.assert_allclose(acc.compute(), [1 / 2])


# --------------------------------------------------------------------------------------------------------
# randomized comparison with the plain LACSS-style definitions
# --------------------------------------------------------------------------------------------------------


def test_random_ranked_ap_against_plain():
    thresholds = [0.1, 0.3, 0.5, 0.55, 0.75, 0.9]
    for seed in range(6):
        data = random_dataset(seed, 5)
        ours = ranked_average_precision(data, thresholds)
        ref = plain_ranked_ap(data, thresholds)
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_random_pooled_dice_against_plain():
    for seed in range(6):
        data = random_dataset(100 + seed, 4)
        pairs = [(g, p) for g, p, _ in data]
        assert area_weighted_instance_dice(pairs) == pytest.approx(plain_pooled_dice(pairs), abs=1e-12)
        # single image: equals the per-image instance_dice
        assert area_weighted_instance_dice(pairs[:1]) == pytest.approx(instance_dice(*pairs[0]), abs=1e-12)
        # the score filter equals removing the low-score predictions from the label image
        kept = [(g, np.where(np.isin(p, [i for i, s in sc.items() if s >= 0.5]), p, 0)) for g, p, sc in data]
        assert area_weighted_instance_dice(data, min_score=0.5) == pytest.approx(plain_pooled_dice(kept), abs=1e-12)


# --------------------------------------------------------------------------------------------------------
# scores, empty data, errors
# --------------------------------------------------------------------------------------------------------


def test_score_formats():
    ids = np.array([2, 5])
    np.testing.assert_allclose(scores_for(ids, {2: 0.1, 5: 0.7, 9: 0.3}), [0.1, 0.7])
    np.testing.assert_allclose(scores_for(ids, {"2": 0.1, "5": 0.7}), [0.1, 0.7])  # JSON keys
    np.testing.assert_allclose(scores_for(ids, np.array([0, 0, 0.1, 0, 0, 0.7])), [0.1, 0.7])
    with pytest.raises(DataError, match="no score"):
        scores_for(ids, {2: 0.1})
    with pytest.raises(DataError, match="no entry"):
        scores_for(ids, [0.0, 0.1])
    with pytest.raises(DataError, match="finite"):
        scores_for(ids, {2: 0.1, 5: float("nan")})
    with pytest.raises(DataError, match="1-D"):
        scores_for(ids, np.zeros((2, 6)))
    with pytest.raises(DataError, match="keys"):
        scores_for(ids, {"a": 1.0})


def test_empty_dataset_conventions():
    z = np.zeros((3, 3), np.int32)
    np.testing.assert_allclose(ranked_average_precision([(z, z, {})], [0.5]), [1.0])
    np.testing.assert_allclose(ranked_average_precision([(z, z, {})], [0.5], empty_value=0.0), [0.0])
    one = z.copy()
    one[0, 0] = 3
    np.testing.assert_allclose(ranked_average_precision([(z, one, {3: 0.5})], [0.5]), [0.0])
    np.testing.assert_allclose(ranked_average_precision([(one, z, {})], [0.5]), [0.0])
    assert area_weighted_instance_dice([(z, z)]) == 1.0
    assert area_weighted_instance_dice([(z, one)]) == 0.0
    assert RankedAP().compute().tolist() == [1.0] * len(COCO_THRESHOLDS)


def test_input_errors():
    with pytest.raises(TypeError, match="score"):
        RankedAP().update(GT1, PRED1)
    with pytest.raises(TypeError, match="min_score"):
        area_weighted_instance_dice([(GT1, PRED1)], min_score=0.5)
    with pytest.raises(TypeError, match="item"):
        ranked_average_precision([GT1])
    with pytest.raises(ValueError, match="thresholds"):
        RankedAP([1.5])
    assert COCO_THRESHOLDS[2] == 0.6 and len(COCO_THRESHOLDS) == 10


def test_arange_thresholds_equal_exact_ones():
    np.testing.assert_array_equal(
        ranked_average_precision(HAND, np.arange(0.5, 1.0, 0.05)), ranked_average_precision(HAND, COCO_THRESHOLDS)
    )
