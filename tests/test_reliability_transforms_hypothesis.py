"""Property-based tests of the point-aware spatial transforms: for random images, labels and points, points move
with the pixels (the label under a point keeps the point's id), stay inside the output image, and companions stay
aligned; output shapes are what was asked. Bad input gives DataError, never a silently wrong shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_ext.errors import DataError
from monai_ext.transforms.points import PadPointsd, RandPointCropd, RandPointFlipRotated, RandPointZoomd

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def samples(draw):
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    n = draw(st.integers(0, min(h * w, 12)))
    flat = draw(st.lists(st.integers(0, h * w - 1), min_size=n, max_size=n, unique=True))
    ys, xs = np.unravel_index(np.asarray(flat, np.int64), (h, w))
    label = np.zeros((1, h, w), np.int32)
    label[0, ys, xs] = np.arange(1, n + 1)
    image = np.random.default_rng(draw(st.integers(0, 999))).random((2, h, w)).astype(np.float32)
    return {"image": image, "label": label, "points": np.stack([ys, xs], 1).astype(np.float32).reshape(-1, 2),
            "point_ids": np.arange(1, n + 1)}


def _check(d: dict, shape: tuple[int, int]) -> None:
    assert d["image"].shape == (2, *shape) and d["label"].shape == (1, *shape)
    pts, ids = d["points"], d["point_ids"]
    assert pts.shape == (len(ids), 2) and pts.dtype == np.float32
    assert ((pts >= -0.5) & (pts < np.asarray(shape) - 0.5)).all()
    yx = np.rint(pts).astype(np.int64)
    np.testing.assert_array_equal(d["label"][0, yx[:, 0], yx[:, 1]], ids)  # each point still on its own pixel


@SETTINGS
@given(d=samples(), roi=st.tuples(st.integers(1, 24), st.integers(1, 24)), seed=st.integers(0, 2**16))
def test_random_crop_moves_points_with_pixels(d, roi, seed) -> None:
    t = RandPointCropd(roi_size=roi)
    t.set_random_state(seed)
    out = t(d)
    _check(out, roi)
    # every point whose pixel survived the crop is still there
    assert len(out["point_ids"]) == len(np.unique(out["label"][out["label"] > 0]))


@SETTINGS
@given(d=samples(), seed=st.integers(0, 2**16))
def test_random_flip_rotate_keeps_every_point(d, seed) -> None:
    t = RandPointFlipRotated(prob=1.0)
    t.set_random_state(seed)
    out = t(d)
    shape = out["image"].shape[1:]
    assert sorted(shape) == sorted(d["image"].shape[1:])
    _check(out, shape)
    assert len(out["point_ids"]) == len(d["point_ids"])


@SETTINGS
@given(d=samples(), seed=st.integers(0, 2**16), lo=st.floats(0.5, 1.0), extra=st.floats(0.0, 0.5))
def test_random_zoom_keeps_points_inside(d, seed, lo, extra) -> None:
    t = RandPointZoomd(min_zoom=lo, max_zoom=lo + extra, prob=1.0)
    t.set_random_state(seed)
    out = t(d)
    shape = out["image"].shape[1:]
    assert out["label"].shape == (1, *shape) and out["label"].dtype == d["label"].dtype
    pts = out["points"]
    assert pts.shape == (len(out["point_ids"]), 2)
    assert ((pts >= -0.5) & (pts < np.asarray(shape) - 0.5)).all()


@SETTINGS
@given(d=samples(), max_points=st.integers(1, 16))
def test_pad_points_fixed_length(d, max_points) -> None:
    out = PadPointsd(max_points=max_points)(d)
    n = min(len(d["points"]), max_points)
    assert out["points"].shape == (max_points, 2) and out["points_valid"].sum() == n
    np.testing.assert_array_equal(out["points"][:n], d["points"][:n])
    assert (out["points"][n:] == -1).all() and out["point_ids"].shape == (max_points,)


def test_transform_without_any_image_key_raises() -> None:
    with pytest.raises(DataError, match="none of the keys"):
        RandPointCropd(roi_size=4)({"points": np.zeros((1, 2), np.float32)})
