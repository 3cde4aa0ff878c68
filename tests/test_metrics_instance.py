"""Tests of monai_ext.metrics.instance against hand-worked cases, plain slow definitions, skimage and MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_panoptic_quality
from scipy.optimize import linear_sum_assignment
from skimage.metrics import adapted_rand_error as skimage_are

from monai_ext.metrics import (
    DEFAULT_METRICS,
    InstanceMetricSpec,
    adapted_rand_error,
    aggregate_metrics,
    aji,
    aji_breakdown,
    aji_plus,
    compute_overlap,
    dice2,
    dsb_ap,
    foreground_dice,
    foreground_iou,
    instance_dice,
    instance_metrics,
    instance_statistics,
    panoptic_quality,
    sbd,
)

# --------------------------------------------------------------------------------------------------------
# plain, slow definitions (boolean masks and loops; nothing shared with the library)
# --------------------------------------------------------------------------------------------------------


class Plain:
    """Dense per-instance tables computed mask by mask."""

    def __init__(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.gt, self.pred = gt, pred
        self.g_ids = [int(i) for i in np.unique(gt) if i != 0]
        self.p_ids = [int(i) for i in np.unique(pred) if i != 0]
        n, m = len(self.g_ids), len(self.p_ids)
        self.ga = np.array([np.sum(gt == g) for g in self.g_ids], dtype=float)
        self.pa = np.array([np.sum(pred == p) for p in self.p_ids], dtype=float)
        self.inter = np.zeros((n, m))
        for i, g in enumerate(self.g_ids):
            for j, p in enumerate(self.p_ids):
                self.inter[i, j] = np.sum((gt == g) & (pred == p))
        self.union = self.ga[:, None] + self.pa[None, :] - self.inter
        self.iou = np.where(self.inter > 0, self.inter / np.maximum(self.union, 1), 0.0)
        self.n, self.m = n, m


def plain_aji(t: Plain) -> float:
    """HoVer-Net get_fast_aji, written out."""
    if t.n == 0 and t.m == 0:
        return 1.0
    c = u = 0.0
    used = set()
    for i in range(t.n):
        if t.m == 0 or t.inter[i].max() == 0:
            u += t.ga[i]
            continue
        j = int(np.argmax(t.iou[i]))  # first maximum = lowest prediction id
        c += t.inter[i, j]
        u += t.union[i, j]
        used.add(j)
    u += sum(t.pa[j] for j in range(t.m) if j not in used)
    return c / u


def plain_aji_plus(t: Plain) -> float:
    """HoVer-Net get_fast_aji_plus, written out (dense Hungarian)."""
    if t.n == 0 and t.m == 0:
        return 1.0
    rows, cols = linear_sum_assignment(-t.iou) if t.n and t.m else (np.zeros(0, int), np.zeros(0, int))
    keep = t.iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    c = t.inter[rows, cols].sum()
    u = t.union[rows, cols].sum()
    u += sum(t.ga[i] for i in range(t.n) if i not in set(rows.tolist()))
    u += sum(t.pa[j] for j in range(t.m) if j not in set(cols.tolist()))
    return c / u


def plain_pq(t: Plain, match_iou: float = 0.5) -> tuple[float, float, float]:
    if t.n == 0 and t.m == 0:
        return 1.0, 1.0, 1.0
    if match_iou >= 0.5:
        pairs = [(i, j) for i in range(t.n) for j in range(t.m) if t.iou[i, j] > match_iou]
    else:
        rows, cols = linear_sum_assignment(-t.iou) if t.n and t.m else ([], [])
        pairs = [(i, j) for i, j in zip(rows, cols) if t.iou[i, j] > match_iou]
    tp = len(pairs)
    fp, fn = t.m - tp, t.n - tp
    s = sum(t.iou[i, j] for i, j in pairs)
    dq = tp / (tp + fp / 2 + fn / 2)
    sq = s / tp if tp else 0.0
    return dq * sq, dq, sq


def plain_dsb_ap(t: Plain, th: float, strict: bool = False) -> float:
    """StarDist / cellpose: Hungarian with cost -(iou>=t) - iou/(2 n_min), TP = assigned pairs passing t."""
    if t.n == 0 and t.m == 0:
        return 1.0
    tp = 0
    if t.n and t.m:
        ok = t.iou > th if strict else t.iou >= th
        cost = -ok.astype(float) - t.iou / (2 * min(t.n, t.m))
        rows, cols = linear_sum_assignment(cost)
        tp = int(ok[rows, cols].sum())
    return tp / (tp + (t.m - tp) + (t.n - tp))


def plain_sbd(t: Plain) -> float:
    if t.n == 0 and t.m == 0:
        return 1.0
    if t.n == 0 or t.m == 0:
        return 0.0
    dice = 2 * t.inter / (t.ga[:, None] + t.pa[None, :])
    return min(dice.max(axis=1).mean(), dice.max(axis=0).mean())


def plain_fg(t: Plain) -> tuple[float, float]:
    g, p = t.gt > 0, t.pred > 0
    if not g.any() and not p.any():
        return 1.0, 1.0
    i = np.sum(g & p)
    return 2 * i / (g.sum() + p.sum()), i / np.sum(g | p)


def plain_dice2(t: Plain) -> float:
    if t.n == 0 and t.m == 0:
        return 1.0
    num = den = 0.0
    for i in range(t.n):
        for j in range(t.m):
            if t.inter[i, j] > 0:
                num += 2 * t.inter[i, j]
                den += t.ga[i] + t.pa[j]
    return num / den if den else 0.0


def plain_instance_dice(t: Plain) -> float:
    """LACSS metrics/dice.py Dice.update + compute, for one image."""
    if t.n == 0 and t.m == 0:
        return 1.0
    if t.n == 0 or t.m == 0:
        return 0.0
    its = t.inter.T  # (pred, gt)
    pred_dice = its.max(axis=1) * 2 / (t.pa + t.ga[its.argmax(axis=1)])
    gt_dice = its.max(axis=0) * 2 / (t.ga + t.pa[its.argmax(axis=0)])
    return ((t.pa / t.pa.sum() * pred_dice).sum() + (t.ga / t.ga.sum() * gt_dice).sum()) / 2


def plain_are(gt: np.ndarray, pred: np.ndarray) -> float:
    """Pair counting written out over the contingency table of GT-foreground pixels."""
    fg = gt > 0
    g, p = gt[fg], pred[fg]
    pairs = {}
    for a, b in zip(g.tolist(), p.tolist()):
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    rows, cols = {}, {}
    for (a, b), n in pairs.items():
        rows[a] = rows.get(a, 0) + n
        cols[b] = cols.get(b, 0) + n
    s_p = sum(n * n - n for n in pairs.values())
    s_a = sum(n * n - n for n in rows.values())
    s_b = sum(n * n - n for n in cols.values())
    if s_a + s_b == 0:
        return 0.0  # no two pixels share a segment on either side: nothing disagrees (documented convention)
    return 1 - s_p / (0.5 * s_a + 0.5 * s_b)


# --------------------------------------------------------------------------------------------------------
# random label images
# --------------------------------------------------------------------------------------------------------


def blobs(rng: np.random.Generator, shape: tuple[int, ...], n: int, max_id: int = 10_000) -> np.ndarray:
    """Rectangles with random (non-contiguous) ids painted over each other."""
    lab = np.zeros(shape, dtype=np.int32)
    for i in rng.choice(np.arange(1, max_id), size=n, replace=False):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [min(s, a + int(rng.integers(1, max(2, s // 2)))) for a, s in zip(lo, shape)]
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
    return lab


def perturbed(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A plausible prediction: GT shifted by a pixel, some ids merged / dropped, relabelled, plus noise blobs."""
    pred = np.roll(gt, tuple(int(s) for s in rng.integers(-1, 2, gt.ndim)), axis=tuple(range(gt.ndim)))
    ids = np.unique(pred)
    new = rng.choice(np.arange(1, 50_000), size=ids.size, replace=False)
    new[rng.random(ids.size) < 0.15] = 0
    merge = rng.random(ids.size) < 0.15
    new[merge] = new[np.roll(merge, 1)] if merge.any() else new[merge]
    lut = dict(zip(ids.tolist(), new.tolist()))
    lut[0] = 0
    pred = np.vectorize(lut.get)(pred).astype(np.int64)
    extra = blobs(rng, gt.shape, 3)
    return np.where((pred == 0) & (extra > 0), extra + 60_000, pred)


def random_cases(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for k in range(count):
        shape = (int(rng.integers(8, 30)), int(rng.integers(8, 30))) if k % 3 else (6, 7, 8)
        gt = blobs(rng, shape, int(rng.integers(0, 14)))
        pred = perturbed(rng, gt) if k % 2 else blobs(rng, shape, int(rng.integers(0, 14)))
        yield gt, pred


# --------------------------------------------------------------------------------------------------------
# hand-worked cases
# --------------------------------------------------------------------------------------------------------

# GT: 1 (8 px), 2 (4 px), 3 (2 px). Pred: 5 (6 px inside 1), 7 (6 px = GT 2 + 2 background), 9 (2 px, FP).
HAND_GT = np.array([
    [1, 1, 1, 1, 0, 0, 2, 2],
    [1, 1, 1, 1, 0, 0, 2, 2],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [3, 3, 0, 0, 0, 0, 0, 0],
])
HAND_PRED = np.array([
    [5, 5, 5, 0, 0, 7, 7, 7],
    [5, 5, 5, 0, 0, 7, 7, 7],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 9, 9, 0, 0],
])


def test_hand_case_all_metrics():
    # pairs: (1,5) I=6 U=8 IoU=.75 ; (2,7) I=4 U=6 IoU=2/3 ; GT 3 missed ; pred 9 false positive
    v = instance_metrics(HAND_GT, HAND_PRED, list(DEFAULT_METRICS) + ["miou", "dsb_map"])
    expected = {
        "aji": 10 / 18,  # C = 6 + 4, U = 8 + 6 + |GT3| 2 + |pred9| 2
        "aji_plus": 10 / 18,
        "dq": 2 / 3,  # 2 / (2 + 1/2 + 1/2)
        "sq": (0.75 + 2 / 3) / 2,
        "pq": (0.75 + 2 / 3) / 3,
        "ap50": 2 / 4,
        "ap75": 1 / 5,  # IoU .75 >= .75 counts
        "ap90": 0.0,
        "dsb_map": (0.5 + 0.2 + 0.0) / 3,
        "sbd": (6 / 7 + 0.8) / 3,  # both directions: (12/14 + 8/10 + 0) / 3
        "are": 1 - 46 / 62,  # sum p^2-p = 30+2+12+2, rows 56+12+2, cols (6,4,bg 4) 30+12+12
        "fg_dice": 20 / 28,
        "fg_iou": 10 / 18,
        "miou": (10 / 18 + 14 / 22) / 2,  # background: 14 shared of 22
        "dice2": 20 / 24,  # 2 (6 + 4) / ((8 + 6) + (4 + 6))
        "instance_dice": ((6 * 6 / 7 + 6 * 0.8) / 14 + (8 * 6 / 7 + 4 * 0.8) / 14) / 2,
    }
    assert v.keys() == expected.keys()
    for k, e in expected.items():
        assert v[k] == pytest.approx(e, abs=1e-12), k
    assert skimage_are(HAND_GT, HAND_PRED)[0] == pytest.approx(expected["are"], abs=1e-12)
    # the per-metric functions agree with the one-overlap path
    ov = compute_overlap(HAND_GT, HAND_PRED)
    assert aji(ov) == v["aji"] and aji_plus(ov) == v["aji_plus"] and sbd(ov) == v["sbd"]
    assert panoptic_quality(ov) == (v["pq"], v["dq"], v["sq"])
    assert dsb_ap(ov, thresholds=0.75) == v["ap75"] and dsb_ap(ov, thresholds=0.75, strict=True) == 0.0
    np.testing.assert_allclose(dsb_ap(ov), [v["ap50"], v["ap75"], v["ap90"]])
    assert adapted_rand_error(ov) == v["are"] and foreground_dice(ov) == v["fg_dice"]
    assert foreground_iou(ov) == v["fg_iou"] and foreground_iou(ov, include_background=True) == v["miou"]
    assert dice2(ov) == v["dice2"] and instance_dice(ov) == v["instance_dice"]
    assert aji(HAND_GT, HAND_PRED) == v["aji"]


def test_iou_exactly_half():
    gt, pred = np.array([[1, 1, 0, 0]]), np.array([[2, 0, 0, 0]])  # IoU = 1/2
    assert panoptic_quality(gt, pred) == (0.0, 0.0, 0.0)  # strict > 0.5 (HoVer, MONAI)
    assert dsb_ap(gt, pred, thresholds=0.5) == 1.0  # >= 0.5 (cellpose, StarDist)
    assert dsb_ap(gt, pred, thresholds=0.5, strict=True) == 0.0
    # two predictions both at IoU 1/2 with one GT: only one can match
    assert dsb_ap(np.array([[1, 1]]), np.array([[2, 3]]), thresholds=0.5) == 0.5


def test_aji_reuses_predictions_aji_plus_does_not():
    gt, pred = np.array([[1, 1, 2, 2]]), np.array([[3, 3, 3, 3]])
    assert aji(gt, pred) == pytest.approx(4 / 8)  # both GT take pred 3: C = 2 + 2, U = 4 + 4
    assert aji_plus(gt, pred) == pytest.approx(2 / 6)  # one pair: C = 2, U = 4 + other GT 2
    assert panoptic_quality(gt, pred)[0] == 0.0


def test_aji_breakdown_hand_case():
    gt = np.array([[1, 1, 1, 2, 2, 0, 3, 3, 0, 0]])
    pred = np.array([[5, 5, 6, 7, 7, 0, 3, 3, 8, 8]])
    out = aji_breakdown(gt, pred, connectivity=1)
    # adjacent {1, 2}: C = 2 + 2, U = 3 + 2 + unused pred 6 (meets GT 1) 1 ; non-adjacent {3}: C = 2, U = 2 + pred 8 (2)
    assert out["aji_adjacent"] == pytest.approx(4 / 6)
    assert out["aji_non_adjacent"] == pytest.approx(2 / 4)
    assert out["aji"] == pytest.approx(6 / 10)
    assert (out["n_adjacent"], out["n_non_adjacent"]) == (2, 1)
    # no touching GT at all: the adjacent group is empty -> nan, skipped by per-image means
    iso = aji_breakdown(np.array([[1, 0, 2]]), np.array([[1, 0, 2]]))
    assert math.isnan(iso["aji_adjacent"]) and iso["aji_non_adjacent"] == 1.0


def test_aji_breakdown_partitions_aji():
    for gt, pred in random_cases(11, 12):
        spec = InstanceMetricSpec(["aji", "aji_adjacent", "aji_non_adjacent"])
        stats = spec.statistics(compute_overlap(gt, pred, adjacency=True))
        assert stats[0] == pytest.approx(stats[2] + stats[4])  # C
        assert stats[1] == pytest.approx(stats[3] + stats[5])  # U


# --------------------------------------------------------------------------------------------------------
# randomized comparison with the plain definitions
# --------------------------------------------------------------------------------------------------------


def test_random_against_plain_definitions():
    metrics = list(DEFAULT_METRICS) + ["ap30", "ap60"]
    for gt, pred in random_cases(0, 40):
        t = Plain(gt, pred)
        v = instance_metrics(gt, pred, metrics)
        pq, dq, sq = plain_pq(t)
        ref = {
            "aji": plain_aji(t),
            "aji_plus": plain_aji_plus(t),
            "pq": pq, "dq": dq, "sq": sq,
            "ap50": plain_dsb_ap(t, 0.5), "ap75": plain_dsb_ap(t, 0.75), "ap90": plain_dsb_ap(t, 0.9),
            "ap30": plain_dsb_ap(t, 0.3), "ap60": plain_dsb_ap(t, 0.6),
            "sbd": plain_sbd(t),
            "fg_dice": plain_fg(t)[0], "fg_iou": plain_fg(t)[1],
            "dice2": plain_dice2(t),
            "instance_dice": plain_instance_dice(t),
        }
        for k, e in ref.items():
            assert v[k] == pytest.approx(e, abs=1e-9), (k, gt.shape)
        for th in (0.1, 0.5, 0.7):
            assert dsb_ap(gt, pred, thresholds=th, strict=True) == pytest.approx(plain_dsb_ap(t, th, strict=True))
        if t.n and t.m:
            assert v["are"] == pytest.approx(plain_are(gt, pred), abs=1e-9)
            if t.ga.max() > 1:  # skimage divides 0 by 0 when every segment is a single pixel
                with np.errstate(divide="ignore", invalid="ignore"):  # its unused recall may be 0/0
                    assert v["are"] == pytest.approx(skimage_are(gt, pred)[0], abs=1e-9)
        else:
            assert v["are"] == (0.0 if t.n == t.m == 0 else 1.0)
        for mi in (0.3, 0.5, 0.75):
            assert panoptic_quality(gt, pred, match_iou=mi) == pytest.approx(plain_pq(t, mi), abs=1e-9)


def test_against_monai_panoptic_quality():
    for gt, pred in random_cases(1, 30):
        t = Plain(gt, pred)
        if t.n == 0 and t.m == 0:
            continue  # MONAI gives 0 there; our convention is empty_value
        for mi in (0.5, 0.3, 0.75):
            pq, dq, sq = panoptic_quality(gt, pred, match_iou=mi)
            g, p = torch.as_tensor(gt), torch.as_tensor(pred)
            for name, ours in (("pq", pq), ("rq", dq), ("sq", sq)):
                theirs = float(compute_panoptic_quality(p, g, metric_name=name, match_iou_threshold=mi))
                assert ours == pytest.approx(theirs, abs=1e-5), (name, mi)


def test_pooled_pq_equals_monai_confusion_sums():
    pairs = list(random_cases(2, 10))
    total = sum(
        compute_panoptic_quality(torch.as_tensor(p), torch.as_tensor(g), output_confusion_matrix=True).double()
        for g, p in pairs
    )
    tp, fp, fn, iou_sum = total.tolist()
    pooled = aggregate_metrics(pairs, mode="pooled", metrics=["pq", "dq", "sq"])
    assert pooled["pq"] == pytest.approx(iou_sum / (tp + fp / 2 + fn / 2), abs=1e-5)
    assert pooled["dq"] == pytest.approx(tp / (tp + fp / 2 + fn / 2), abs=1e-6)
    assert pooled["sq"] == pytest.approx(iou_sum / tp, abs=1e-5)


def test_relabelling_and_dtype_do_not_change_values():
    rng = np.random.default_rng(4)
    for gt, pred in random_cases(3, 8):
        ref = instance_metrics(gt, pred)
        ids = np.unique(pred)
        new = rng.choice(np.arange(1, 250), size=ids.size, replace=False).astype(np.uint8)
        new[ids == 0] = 0
        relabelled = new[np.searchsorted(ids, pred)]
        got = instance_metrics(gt.astype(np.uint16), relabelled)
        for k in ref:
            assert got[k] == pytest.approx(ref[k], abs=1e-12), k


def test_three_d_equals_flattened_two_d():
    rng = np.random.default_rng(8)
    gt = blobs(rng, (5, 6, 7), 8)
    pred = perturbed(rng, gt)
    v3 = instance_metrics(gt, pred)
    v2 = instance_metrics(gt.reshape(30, 7), pred.reshape(30, 7))
    assert v3 == pytest.approx(v2)


# --------------------------------------------------------------------------------------------------------
# empty images and ignore labels
# --------------------------------------------------------------------------------------------------------


def test_empty_conventions():
    z = np.zeros((4, 4), np.int32)
    one = z.copy()
    one[1:3, 1:3] = 4
    both = instance_metrics(z, z, list(DEFAULT_METRICS) + ["miou"])
    assert all(v == 1.0 for k, v in both.items() if k != "are") and both["are"] == 0.0
    for gt, pred in ((z, one), (one, z)):
        v = instance_metrics(gt, pred, list(DEFAULT_METRICS))
        assert all(val == 0.0 for k, val in v.items() if k != "are") and v["are"] == 1.0
    nan = instance_metrics(z, z, ["aji", "pq", "are", "fg_dice"], empty_value=float("nan"))
    assert all(math.isnan(v) for v in nan.values())
    assert instance_metrics(z, z, ["aji", "pq"], empty_value=0.0) == {"aji": 0.0, "pq": 0.0}
    # an image without pixels
    e = np.zeros((0, 3), np.int64)
    assert instance_metrics(e, e, ["aji", "miou"]) == {"aji": 1.0, "miou": 1.0}


def test_ignore_negative_equals_removing_pixels():
    gt = np.array([[1, 1, -1, 2, 2], [1, 1, 2, 2, 0]])
    pred = np.array([[3, 3, 3, 4, -1], [0, 3, 4, 4, 4]])
    keep = (gt >= 0) & (pred >= 0)
    got = instance_metrics(gt, pred, ignore_negative=True)
    ref = instance_metrics(gt[keep], pred[keep])
    assert got == pytest.approx(ref)


# --------------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------------


def test_per_image_vs_pooled_by_hand():
    a_gt, a_pred = np.array([[1, 1, 1, 1]]), np.array([[2, 2, 0, 0]])  # AJI 2/4
    b_gt, b_pred = np.array([[1, 0, 0, 0]]), np.array([[1, 1, 1, 1]])  # AJI 1/4
    per = aggregate_metrics([(a_gt, a_pred), (b_gt, b_pred)], mode="per_image", metrics=["aji"])
    pooled = aggregate_metrics([(a_gt, a_pred), (b_gt, b_pred)], mode="pooled", metrics=["aji"])
    assert per["aji"] == pytest.approx((0.5 + 0.25) / 2)
    assert pooled["aji"] == pytest.approx((2 + 1) / (4 + 4))
    # statistics, overlaps, value dicts
    stats = [instance_statistics(a_gt, a_pred, ["aji"]), instance_statistics(b_gt, b_pred, ["aji"])]
    assert aggregate_metrics(stats, mode="pooled") == pooled
    assert (stats[0] + stats[1]).values() == pooled
    ovs = [compute_overlap(a_gt, a_pred), compute_overlap(b_gt, b_pred)]
    assert aggregate_metrics(ovs, mode="per_image", metrics=["aji"]) == per
    assert aggregate_metrics([{"aji": 0.5}, {"aji": 0.25}]) == per
    with pytest.raises(ValueError, match="pooled"):
        aggregate_metrics([{"aji": 0.5}], mode="pooled")
    with pytest.raises(ValueError, match="mode"):
        aggregate_metrics(ovs, mode="sum")
    with pytest.raises(ValueError, match="no images"):
        aggregate_metrics([])


def test_per_image_mean_skips_nan_images():
    z = np.zeros((2, 2), np.int32)
    gt = np.array([[1, 1], [0, 0]])
    items = [(z, z), (gt, gt)]
    assert aggregate_metrics(items, metrics=["aji"], empty_value=float("nan"))["aji"] == 1.0
    assert aggregate_metrics(items, metrics=["aji"], empty_value=0.0)["aji"] == 0.5
    assert math.isnan(aggregate_metrics([(z, z)], metrics=["aji"], empty_value=float("nan"))["aji"])


def test_pooled_random_equals_summed_counts():
    pairs = list(random_cases(5, 10))
    pooled = aggregate_metrics(pairs, mode="pooled", metrics=["aji", "ap50", "fg_dice", "sbd"])
    tabs = [Plain(g, p) for g, p in pairs]
    # AJI: sum C / sum U from the plain definition
    c = u = 0.0
    for t in tabs:
        used = set()
        for i in range(t.n):
            if t.m == 0 or t.inter[i].max() == 0:
                u += t.ga[i]
                continue
            j = int(np.argmax(t.iou[i]))
            c, u = c + t.inter[i, j], u + t.union[i, j]
            used.add(j)
        u += sum(t.pa[j] for j in range(t.m) if j not in used)
    assert pooled["aji"] == pytest.approx(c / u)
    fg_i = sum(np.sum((g > 0) & (p > 0)) for g, p in pairs)
    fg_s = sum(np.sum(g > 0) + np.sum(p > 0) for g, p in pairs)
    assert pooled["fg_dice"] == pytest.approx(2 * fg_i / fg_s)
    n = sum(t.n for t in tabs)
    m = sum(t.m for t in tabs)
    tp = sum(round(plain_dsb_ap(t, 0.5) * (t.n + t.m) / (1 + plain_dsb_ap(t, 0.5))) for t in tabs)
    assert pooled["ap50"] == pytest.approx(tp / (n + m - tp))


def test_spec_names_and_errors():
    spec = InstanceMetricSpec(["PQ", "adapted_rand_error", "ap52.5", "dsb_ap"], ap_thresholds=(0.5, 0.75))
    assert spec.keys == ("pq", "are", "ap52.5", "ap50", "ap75")
    assert spec.dsb_thresholds == (0.5, 0.525, 0.75)
    with pytest.raises(ValueError, match="unknown metric"):
        InstanceMetricSpec(["nope"])
    with pytest.raises(ValueError, match="match_iou"):
        InstanceMetricSpec(["pq"], match_iou=0.0)
    with pytest.raises(ValueError, match="AP threshold"):
        InstanceMetricSpec(["ap150"])
    with pytest.raises(TypeError, match="unexpected"):
        instance_statistics(HAND_GT, HAND_PRED, ["aji"], bogus=1)
    with pytest.raises(ValueError, match="adjacency"):
        instance_metrics(compute_overlap(HAND_GT, HAND_PRED), metrics=["aji_adjacent"])


def test_thresholds_from_arange_keep_exact_ratios():
    gt, pred = np.array([[1, 1, 1, 1, 1]]), np.array([[2, 2, 2, 0, 0]])  # IoU = 3/5
    thresholds = np.arange(0.5, 1.0, 0.05)[:3]  # the last one is 0.6000000000000001
    assert thresholds[-1] > 0.6
    np.testing.assert_array_equal(dsb_ap(gt, pred, thresholds=thresholds), [1.0, 1.0, 1.0])
    assert dsb_ap(gt, pred, thresholds=thresholds, strict=True)[-1] == 0.0
    assert instance_metrics(gt, pred, ["dsb_map"], ap_thresholds=thresholds) == {"dsb_map": 1.0}


def test_overlap_or_images_not_both():
    ov = compute_overlap(HAND_GT, HAND_PRED)
    with pytest.raises(TypeError, match="either"):
        aji(ov, HAND_PRED)
    with pytest.raises(TypeError, match="pred is required"):
        aji(HAND_GT)
