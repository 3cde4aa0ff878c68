"""Tests of monai_ext.metrics.overlap: the sparse overlap table, input validation, matchings, adjacency."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_ext.errors import DataError
from monai_ext.metrics import (
    compute_overlap,
    max_cardinality_matching_size,
    max_iou_matching,
    touching_instances,
)

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def plain_table(gt: np.ndarray, pred: np.ndarray) -> dict[tuple[int, int], int]:
    """Obvious overlap: for every GT id and every prediction id, count the shared pixels."""
    out = {}
    for g in np.unique(gt):
        for p in np.unique(pred):
            n = int(np.sum((gt == g) & (pred == p)))
            if g != 0 and p != 0 and n:
                out[(int(g), int(p))] = n
    return out


def as_table(ov) -> dict[tuple[int, int], int]:
    return {
        (int(ov.gt_ids[a]), int(ov.pred_ids[b])): int(n)
        for a, b, n in zip(ov.pair_gt, ov.pair_pred, ov.pair_inter)
    }


def random_pair(rng: np.random.Generator, shape: tuple[int, ...], n_gt: int, n_pred: int, max_id: int = 1000):
    """Rectangles of random ids painted over each other (irregular, non-contiguous ids)."""
    out = []
    for n in (n_gt, n_pred):
        lab = np.zeros(shape, dtype=np.int64)
        ids = rng.choice(np.arange(1, max_id + 1), size=n, replace=False)
        for i in ids:
            lo = [rng.integers(0, s) for s in shape]
            hi = [min(s, a + rng.integers(1, max(2, s // 2))) for a, s in zip(lo, shape)]
            lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
        out.append(lab)
    return out[0], out[1]


def test_hand_case_table():
    gt = np.array([[1, 1, 0, 7], [1, 1, 0, 7]])
    pred = np.array([[4, 0, 0, 9], [4, 4, 9, 9]])
    ov = compute_overlap(gt, pred)
    assert ov.gt_ids.tolist() == [1, 7] and ov.pred_ids.tolist() == [4, 9]
    assert ov.gt_areas.tolist() == [4, 2] and ov.pred_areas.tolist() == [3, 3]
    assert as_table(ov) == {(1, 4): 3, (7, 9): 2}
    assert ov.n_pixels == 8
    np.testing.assert_allclose(ov.pair_iou, [3 / 4, 2 / 3])
    np.testing.assert_allclose(ov.dense_iou(), [[0.75, 0], [0, 2 / 3]])
    assert ov.to_sparse().toarray().tolist() == [[3, 0], [0, 2]]
    assert ov.gt_matched_pixels.tolist() == [3, 2] and ov.pred_matched_pixels.tolist() == [3, 2]


@pytest.mark.parametrize("method", ["auto", "sort", "bincount"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_random_against_plain_table(method, ndim):
    rng = np.random.default_rng(ndim)
    shape = (23, 17) if ndim == 2 else (7, 9, 11)
    for _ in range(10):
        gt, pred = random_pair(rng, shape, int(rng.integers(0, 15)), int(rng.integers(0, 15)))
        ov = compute_overlap(gt, pred, method=method)
        assert as_table(ov) == plain_table(gt, pred)
        assert dict(zip(ov.gt_ids.tolist(), ov.gt_areas.tolist())) == {
            int(i): int((gt == i).sum()) for i in np.unique(gt) if i
        }
        assert dict(zip(ov.pred_ids.tolist(), ov.pred_areas.tolist())) == {
            int(i): int((pred == i).sum()) for i in np.unique(pred) if i
        }


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_any_integer_dtype_same_table(dtype):
    rng = np.random.default_rng(0)
    gt, pred = random_pair(rng, (20, 20), 12, 10, max_id=100)
    ref = as_table(compute_overlap(gt, pred))
    assert as_table(compute_overlap(gt.astype(dtype), pred.astype(dtype))) == ref
    assert as_table(compute_overlap(torch.as_tensor(gt.astype(np.int32)), torch.as_tensor(pred))) == ref


def test_huge_ids_take_the_remapping_paths():
    rng = np.random.default_rng(1)
    gt, pred = random_pair(rng, (16, 16), 8, 8, max_id=50)
    ref = compute_overlap(gt, pred)
    big_u = gt.astype(np.uint64) * np.uint64(2**58)  # > 2**63: cannot be an int64 key
    big_i = pred.astype(np.int64) * 2**40 + 3 * (pred > 0)
    for method in ("auto", "sort", "bincount"):
        ov = compute_overlap(big_u, big_i, method=method)
        assert ov.pair_inter.tolist() == ref.pair_inter.tolist()
        assert ov.gt_areas.tolist() == ref.gt_areas.tolist()
        assert ov.gt_ids.tolist() == [int(i) * 2**58 for i in ref.gt_ids]
        assert ov.pred_ids.tolist() == [int(i) * 2**40 + 3 for i in ref.pred_ids]


def test_errors_are_clear():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(DataError, match="same shape"):
        compute_overlap(a, np.zeros((4, 5), np.int32))
    with pytest.raises(DataError, match="float"):
        compute_overlap(a.astype(np.float32), a)
    with pytest.raises(DataError, match="boolean"):
        compute_overlap(a, a.astype(bool))
    with pytest.raises(DataError, match="integer"):
        compute_overlap(a.astype(np.complex64), a)
    with pytest.raises(DataError, match="scalar"):
        compute_overlap(np.int32(3), np.int32(3))
    neg = a.copy()
    neg[0, 0] = -1
    with pytest.raises(DataError, match="ignore_negative"):
        compute_overlap(neg, a)
    with pytest.raises(DataError, match="pred"):
        compute_overlap(a, neg)
    with pytest.raises(ValueError, match="method"):
        compute_overlap(a, a, method="dense")
    assert issubclass(DataError, ValueError)


def test_integral_float_opt_in():
    gt = np.array([[1.0, 1.0, 0.0, 2.0]])
    pred = np.array([[3, 3, 3, 0]])
    ov = compute_overlap(gt, pred, allow_integral_float=True)
    assert as_table(ov) == {(1, 3): 2}
    with pytest.raises(DataError, match="whole numbers"):
        compute_overlap(gt + 0.5, pred, allow_integral_float=True)
    with pytest.raises(DataError, match="whole numbers"):
        compute_overlap(np.array([[np.nan, 1.0, 0.0, 0.0]]), pred, allow_integral_float=True)


def test_ignore_negative_drops_pixels_in_either_image():
    gt = np.array([[1, 1, -1, 2], [1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, -1], [0, 5, 6, 6]])
    ov = compute_overlap(gt, pred, ignore_negative=True)
    keep = (gt >= 0) & (pred >= 0)
    assert ov.n_pixels == int(keep.sum()) == 6
    assert as_table(ov) == plain_table(np.where(keep, gt, 0), np.where(keep, pred, 0))
    assert ov.gt_areas.tolist() == [4, 2] and ov.pred_areas.tolist() == [3, 2]


def test_empty_inputs():
    for shape in [(0, 5), (4, 4), (2, 3, 4)]:
        z = np.zeros(shape, np.uint16)
        ov = compute_overlap(z, z)
        assert ov.n_gt == ov.n_pred == ov.n_pairs == 0 and ov.n_pixels == z.size
        assert max_iou_matching(ov).size == 0


def test_select_pred_equals_zeroing_pixels():
    rng = np.random.default_rng(3)
    gt, pred = random_pair(rng, (20, 20), 10, 10)
    ov = compute_overlap(gt, pred)
    keep = rng.random(ov.n_pred) < 0.5
    sub = ov.select_pred(keep)
    ref = compute_overlap(gt, np.where(np.isin(pred, ov.pred_ids[keep]), pred, 0))
    assert as_table(sub) == as_table(ref)
    assert sub.pred_areas.tolist() == ref.pred_areas.tolist()


def test_touching_instances_2d_and_3d():
    gt = np.array([
        [1, 1, 2, 0, 0, 0],
        [1, 1, 2, 0, 4, 0],
        [0, 0, 0, 3, 0, 0],
    ])
    assert touching_instances(gt, connectivity=1).tolist() == [1, 2]
    assert touching_instances(gt).tolist() == [1, 2, 3, 4]
    vol = np.zeros((4, 4, 4), np.int32)
    vol[0, 0, 0], vol[1, 1, 1], vol[3, 3, 3] = 5, 6, 7
    assert touching_instances(vol, connectivity=1).size == 0
    assert touching_instances(vol, connectivity=2).size == 0
    assert touching_instances(vol).tolist() == [5, 6]  # corner contact only
    ov = compute_overlap(gt, gt, adjacency=True, connectivity=1)
    assert ov.gt_adjacent.tolist() == [True, True, False, False]


def test_max_iou_matching_is_optimal():
    rng = np.random.default_rng(5)
    for _ in range(25):
        gt, pred = random_pair(rng, (24, 24), int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        ov = compute_overlap(gt, pred)
        sel = max_iou_matching(ov)
        # one-to-one
        assert len(set(ov.pair_gt[sel].tolist())) == sel.size == len(set(ov.pair_pred[sel].tolist()))
        dense = ov.dense_iou()
        r, c = linear_sum_assignment(-dense)
        assert ov.pair_iou[sel].sum() == pytest.approx(dense[r, c].sum(), abs=1e-12)


def test_max_cardinality_matching_size():
    rng = np.random.default_rng(6)
    for _ in range(25):
        gt, pred = random_pair(rng, (16, 16), int(rng.integers(1, 15)), int(rng.integers(1, 15)))
        ov = compute_overlap(gt, pred)
        for t in (0.05, 0.2, 0.5):
            edges = ov.pair_iou >= t
            dense = np.zeros((ov.n_gt, ov.n_pred))
            dense[ov.pair_gt[edges], ov.pair_pred[edges]] = 1
            r, c = linear_sum_assignment(-dense)
            assert max_cardinality_matching_size(ov, edges) == int(dense[r, c].sum())


def test_memory_grows_with_pixels_not_instances():
    # 256 x 256 image with ~6500 instances on each side: pixels x instances would be ~4e8 cells.
    rng = np.random.default_rng(7)
    gt = (np.arange(256 * 256).reshape(256, 256) // 10).astype(np.int32) + 1
    pred = rng.permutation(gt.max() + 1)[gt].astype(np.int32)
    pred[:, ::7] = 0
    tracemalloc.start()
    ov = compute_overlap(gt, pred)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ov.n_gt > 6000
    assert peak < 64 * gt.size  # bytes: a few int64 copies of the image, nothing N x M
