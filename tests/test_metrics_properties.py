"""Property-based tests of monai_ext.metrics: random valid and invalid inputs, ranges, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from monai_ext.errors import DataError
from monai_ext.metrics import (
    DEFAULT_METRICS,
    InstanceSegMetric,
    aggregate_metrics,
    compute_overlap,
    instance_metrics,
    ranked_average_precision,
)

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
ALL = list(DEFAULT_METRICS) + ["miou", "dsb_map", "ap30", "aji_adjacent", "aji_non_adjacent"]
MAYBE_NAN = {"aji_adjacent", "aji_non_adjacent"}
# derandomize: CI runs the same examples every time (no flaky failures); explore locally with derandomize=False
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

shapes = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
                   hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5))


@st.composite
def label_pairs(draw, allow_negative: bool = False):
    """Two label images of one shape and (possibly different) integer dtypes, ids 0..k or huge ids."""
    shape = draw(shapes)
    out = []
    for _ in range(2):
        dtype = np.dtype(draw(st.sampled_from(INT_DTYPES)))
        k = draw(st.integers(0, 6))
        codes = draw(hnp.arrays(np.int64, shape, elements=st.integers(-1 if allow_negative else 0, k)))
        if draw(st.booleans()):  # ids spread over the dtype's range: non-contiguous, large
            ids = draw(st.sets(st.integers(1, int(np.iinfo(dtype).max)), min_size=k, max_size=k))
            table = np.array([0] + sorted(ids), dtype=dtype)
        else:
            table = np.arange(k + 1).astype(dtype)
        lab = table[np.clip(codes, 0, k)]
        if dtype.kind == "i":
            lab[codes < 0] = -1
        out.append(lab)
    return out[0], out[1]


def check_ranges(v: dict[str, float]) -> None:
    for k, x in v.items():
        if k in MAYBE_NAN and math.isnan(x):
            continue
        assert 0.0 <= x <= 1.0 + 1e-12, (k, x)


@SETTINGS
@given(label_pairs())
def test_valid_inputs_give_values_in_range(pair):
    gt, pred = pair
    v = instance_metrics(gt, pred, ALL)
    check_ranges(v)
    # one image: per-image mean and pooled agree
    pooled = aggregate_metrics([(gt, pred)], mode="pooled", metrics=ALL)
    for k in v:
        assert pooled[k] == pytest.approx(v[k], nan_ok=True), k


@SETTINGS
@given(label_pairs())
def test_identity_and_symmetry(pair):
    gt, pred = pair
    same = instance_metrics(gt, gt, list(DEFAULT_METRICS))
    assert all(x == pytest.approx(1.0) for k, x in same.items() if k != "are") and same["are"] == pytest.approx(0.0)
    sym = ["pq", "dq", "sq", "ap50", "ap75", "sbd", "fg_dice", "fg_iou", "dice2", "instance_dice"]
    a = instance_metrics(gt, pred, sym)
    b = instance_metrics(pred, gt, sym)
    assert a == pytest.approx(b)


@SETTINGS
@given(label_pairs(), st.randoms(use_true_random=False))
def test_relabelling_and_methods_do_not_matter(pair, rnd):
    gt, pred = pair
    ids = np.unique(pred)
    new = np.array(rnd.sample(range(1, 10**6), ids.size), dtype=np.int64)
    new[ids == 0] = 0
    relabelled = new[np.searchsorted(ids, pred)]
    a = instance_metrics(gt, pred, list(DEFAULT_METRICS))
    b = instance_metrics(gt, relabelled, list(DEFAULT_METRICS))
    for k in ("pq", "dq", "sq", "ap50", "sbd", "are", "fg_dice", "dice2"):
        assert a[k] == pytest.approx(b[k]), k  # not aji, aji_plus, instance_dice: their ties follow id order
    s = compute_overlap(gt, pred, method="sort")
    d = compute_overlap(gt, pred, method="bincount")
    assert s.pair_inter.tolist() == d.pair_inter.tolist() and s.gt_areas.tolist() == d.gt_areas.tolist()


@SETTINGS
@given(label_pairs(allow_negative=True))
def test_negative_ids_raise_or_are_ignored(pair):
    gt, pred = pair
    if (gt < 0).any() or (pred < 0).any():
        with pytest.raises(DataError):
            instance_metrics(gt, pred)
    check_ranges(instance_metrics(gt, pred, ALL, ignore_negative=True))


@SETTINGS
@given(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.bool_, np.complex64]), st.just((4, 5))),
    hnp.arrays(np.int32, st.sampled_from([(4, 5), (5, 4), (4, 5, 1), (20,)]), elements=st.integers(0, 3)),
)
def test_invalid_inputs_raise_data_error(bad, good):
    with pytest.raises(DataError):
        instance_metrics(bad, np.zeros((4, 5), np.int32))
    with pytest.raises(DataError):
        instance_metrics(np.zeros((4, 5), np.int32), bad)
    if good.shape != (4, 5):
        with pytest.raises(DataError, match="same shape"):
            instance_metrics(np.zeros((4, 5), np.int32), good)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(label_pairs(), st.lists(st.floats(0, 1), min_size=64, max_size=64))
def test_ranked_ap_in_range(pair, scores):
    gt, pred = pair
    pred = pred.astype(np.int64) % 64  # ids index the score array
    ap = ranked_average_precision([(gt, pred, np.asarray(scores))], [0.3, 0.5, 0.75])
    assert ((ap >= 0) & (ap <= 1)).all()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(label_pairs(), st.sampled_from(["mean", "pooled", "none"]))
def test_monai_metric_on_random_batches(pair, reduction):
    gt, pred = pair
    metric = InstanceSegMetric(["aji", "pq", "are"], reduction=reduction)
    g = torch.as_tensor(gt.astype(np.int64))[None, None]
    p = torch.as_tensor(pred.astype(np.int64))[None, None]
    metric(p, g)
    out = metric.aggregate()
    for v in out.values():
        assert ((v >= 0) & (v <= 1)).all()
