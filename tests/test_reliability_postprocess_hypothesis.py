"""Property-based tests of post-processing and target transforms: random valid maps give int32 instance labels of
the input's shape, inside the foreground, ids 1..N, no object lost; invalid shapes and NaN/inf give DataError.
Never another exception, never a silently wrong shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from skimage.feature import peak_local_max

from monai_ext.errors import DataError
from monai_ext.postprocess.centers import centre_watershed, connected_instances, instances_from_maps, link_slices
from monai_ext.postprocess.clustering import cluster_embeddings
from monai_ext.postprocess.points import distance_nms
from monai_ext.postprocess.watershed import (
    binary_fill_holes,
    distance_watershed,
    footprint,
    label_peaks,
    marker_watershed,
    relabel_sequential,
    remove_small_instances,
)
from monai_ext.transforms.em import point_zone, points_to_heatmap

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
side = st.integers(min_value=1, max_value=24)
prob = st.floats(0.0, 1.0, width=32)


def maps(n: int = 1, ndim: int = 2, elements=prob):
    """``n`` float32 maps of one random shape."""
    shape = st.tuples(*([st.integers(1, 4)] if ndim == 3 else []), side, side)
    return shape.flatmap(lambda s: st.tuples(*[arrays(np.float32, s, elements=elements) for _ in range(n)]))


def _is_instance_map(lab: np.ndarray, shape: tuple[int, ...]) -> None:
    assert lab.dtype == np.int32 and lab.shape == shape
    ids = np.unique(lab)
    assert ids.min(initial=0) >= 0
    pos = ids[ids > 0]
    np.testing.assert_array_equal(pos, np.arange(1, pos.size + 1))  # sequential 1..N


@SETTINGS
@given(m=maps(1), min_distance=st.integers(0, 6), sigma=st.sampled_from([0.0, 1.0]), fill=st.booleans())
def test_distance_watershed_keeps_every_object(m, min_distance, sigma, fill) -> None:
    mask = m[0] > 0.5
    lab = distance_watershed(mask, min_distance=min_distance, sigma=sigma, fill_holes=fill)
    _is_instance_map(lab, mask.shape)
    region = ndimage.binary_fill_holes(mask) if fill else mask
    assert not (lab > 0)[~region].any()  # nothing added
    comps, n = ndimage.label(region, np.ones((3, 3), bool))
    assert int(lab.max()) >= n
    assert np.all(np.bincount(comps[lab > 0], minlength=n + 1)[1:] > 0)  # no object lost


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=maps(2, ndim=2) | maps(2, ndim=3), levels=st.sampled_from([0, 1, 3]), radius=st.integers(0, 4),
       touching=st.booleans(), full=st.booleans())
def test_label_peaks_equals_scikit_image(m, levels, radius, touching, full) -> None:
    """The vectorised per-object peaks are exactly scikit-image's ``peak_local_max(labels=...)``, ties, plateaus,
    single-pixel and diagonally touching objects included."""
    img = np.round(m[0] * levels) if levels else m[0]  # few levels: many ties and flat objects
    if touching:  # arbitrary ids that touch each other
        labels = np.floor(m[1] * 3).astype(np.int32)
    else:
        labels = ndimage.label(m[1] > 0.4, ndimage.generate_binary_structure(img.ndim, img.ndim if full else 1))[0]
    fp = footprint(radius, img.ndim)
    expected = np.zeros(img.shape, bool)
    coords = peak_local_max(img, footprint=fp, labels=labels, exclude_border=False)
    expected[tuple(coords.T)] = True
    np.testing.assert_array_equal(label_peaks(img, labels, fp), expected)
    np.testing.assert_array_equal(label_peaks(img, labels, fp, chunk=7), expected)  # several gather chunks


def test_label_peaks_of_a_flat_object_are_its_isolated_pixels() -> None:
    """A plateau object has no peak but the pixels a binary opening removes (scikit-image's rule)."""
    img = np.full((7, 7), 2.0)
    img[0, 0] = 0.0  # the image minimum, so that the plateau is above the threshold
    labels = np.zeros((7, 7), np.int32)
    labels[2:5, 2:5] = 1
    labels[5, 3] = 1  # a pixel below the block: the opening keeps it, and the block's two top corners go
    labels[0, 6] = 2  # a one-pixel object
    expected = np.zeros((7, 7), bool)
    expected[2, 2] = expected[2, 4] = expected[0, 6] = True
    np.testing.assert_array_equal(label_peaks(img, labels, footprint(2, 2)), expected)
    coords = peak_local_max(img, footprint=footprint(2, 2), labels=labels, exclude_border=False)
    assert sorted(map(tuple, coords.tolist())) == [(0, 6), (2, 2), (2, 4)]


@SETTINGS
@given(m=maps(1, ndim=2) | maps(1, ndim=3), level=st.sampled_from([0.3, 0.5, 0.7]),
       structure=st.sampled_from(["faces", "full", "planes"]))
def test_binary_fill_holes_equals_scipy(m, level, structure) -> None:
    """The labelling fill equals SciPy's iterated-dilation fill, for 2D, 3D and a batch of 2D planes."""
    mask = m[0] > level
    nd = mask.ndim
    if structure == "planes" and nd == 3:  # (N, H, W) batch: no connection between planes
        st_ = np.zeros((3, 3, 3), bool)
        st_[1] = ndimage.generate_binary_structure(2, 1)
    else:
        st_ = ndimage.generate_binary_structure(nd, nd if structure == "full" else 1)
    np.testing.assert_array_equal(binary_fill_holes(mask, st_), ndimage.binary_fill_holes(mask, st_))
    np.testing.assert_array_equal(binary_fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_binary_fill_holes_fills_a_ring_and_checks_the_structure() -> None:
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    ring[3, 3] = True  # an island inside the hole
    filled = binary_fill_holes(ring)
    assert filled[1:6, 1:6].all() and filled.sum() == 25
    planes = np.zeros((3, 3, 3), bool)  # a batch of 2D masks, each filled on its own
    planes[1] = ndimage.generate_binary_structure(2, 1)
    batch = np.stack([ring, ring, ring])
    np.testing.assert_array_equal(binary_fill_holes(batch, planes), np.stack([filled] * 3))
    np.testing.assert_array_equal(binary_fill_holes(batch), ndimage.binary_fill_holes(batch))  # 3D: plane 0 is a face
    with pytest.raises(ValueError, match="symmetric"):
        binary_fill_holes(ring, np.ones((3, 2), bool))


def test_label_peaks_rejects_what_it_cannot_match() -> None:
    img = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="monotone"):
        label_peaks(img, np.ones((5, 5), int), np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], bool))
    with pytest.raises(ValueError, match="odd"):
        label_peaks(img, np.ones((5, 5), int), np.ones((2, 2), bool))
    with pytest.raises(TypeError, match="integers"):
        label_peaks(img, np.ones((5, 5)), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="shape"):
        label_peaks(img, np.ones((5, 4), int), np.ones((3, 3), bool))


@SETTINGS
@given(m=maps(2), fg_t=prob, edge_t=prob, erosion=st.integers(0, 2), min_size=st.integers(0, 10),
       core=st.integers(0, 4))
def test_marker_watershed_stays_in_foreground(m, fg_t, edge_t, erosion, min_size, core) -> None:
    fg, edge = m
    lab = marker_watershed(fg, edge, fg_t, edge_t, erosion, min_marker_size=2, min_size=min_size,
                           core_min_distance=core)
    _is_instance_map(lab, fg.shape)
    assert not (lab > 0)[~ndimage.binary_fill_holes(fg > fg_t)].any()


@pytest.mark.parametrize("fn", ["marker", "distance"])
def test_watershed_keeps_diagonal_pixels(fn: str) -> None:
    if fn == "marker":  # no core (edge_threshold 0): one marker per 8-connected component
        fg = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
        lab = marker_watershed(fg, np.zeros_like(fg), 0.5, 0.0, 0, min_marker_size=1, min_size=0)
    else:
        fg = np.array([[1, 1, 1, 0, 1], [1, 1, 1, 1, 0]], np.float32)
        lab = distance_watershed(fg > 0, min_distance=2, fill_holes=False)
    np.testing.assert_array_equal(lab > 0, fg > 0)


@SETTINGS
@given(m=maps(2, ndim=3), method=st.sampled_from(["watershed", "cc"]), min_size=st.integers(0, 6))
def test_instances_from_maps_2d_and_3d(m, method, min_size) -> None:
    fg, heat = m
    lab = instances_from_maps(fg, heat, method=method, min_size=min_size)
    _is_instance_map(lab, fg.shape)
    lab2 = instances_from_maps(fg[0], heat[0], method=method, min_size=min_size)
    _is_instance_map(lab2, fg.shape[1:])
    assert not (lab2 > 0)[~ndimage.binary_fill_holes(fg[0] > 0.5)].any()


@SETTINGS
@given(lab=st.tuples(st.integers(1, 4), side, side).flatmap(
    lambda s: arrays(np.int32, s, elements=st.integers(-1, 6))), iou=st.floats(0.0, 1.0))
def test_link_slices_preserves_foreground(lab, iou) -> None:
    out = link_slices(lab, iou)
    _is_instance_map(out, lab.shape)
    np.testing.assert_array_equal(out > 0, lab > 0)
    for z in range(lab.shape[0]):  # ids are only merged across slices, never within one
        pairs = np.unique(np.stack([lab[z][lab[z] > 0], out[z][lab[z] > 0]], 1), axis=0)
        assert len(np.unique(pairs[:, 0])) == len(pairs)


@SETTINGS
@given(lab=st.tuples(side, side).flatmap(lambda s: arrays(np.int32, s, elements=st.integers(-1, 20))),
       min_size=st.integers(0, 8))
def test_relabel_and_remove_small(lab, min_size) -> None:
    rel = relabel_sequential(lab)
    np.testing.assert_array_equal(rel < 0, lab < 0)
    np.testing.assert_array_equal(rel > 0, lab > 0)
    assert len(np.unique(rel[rel > 0])) == len(np.unique(lab[lab > 0]))
    out = remove_small_instances(lab, min_size)
    _, counts = np.unique(out[out > 0], return_counts=True)
    assert (counts >= min_size).all() and out.shape == lab.shape
    assert not ((out > 0) & (lab <= 0)).any()


@SETTINGS
@given(m=maps(1), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_maps_raise_or_stay_valid(m, bad) -> None:
    fg = m[0].copy()
    fg.flat[0] = bad
    for fn in (lambda: marker_watershed(fg, fg.copy()), lambda: centre_watershed(fg, fg.copy()),
               lambda: connected_instances(fg), lambda: instances_from_maps(fg, fg.copy())):
        try:
            lab = fn()
        except DataError as exc:
            assert "NaN" in str(exc) or "finite" in str(exc)
            continue
        _is_instance_map(lab, fg.shape)


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 4), ()])
def test_wrong_dimensions_raise_data_error(shape) -> None:
    x = np.zeros(shape, np.float32)
    for fn in (distance_watershed, connected_instances, lambda a: marker_watershed(a, a),
               lambda a: centre_watershed(a, a), lambda a: instances_from_maps(a, a), link_slices):
        with pytest.raises(DataError):
            fn(x)
    with pytest.raises(DataError, match="differs"):
        marker_watershed(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(DataError, match="one shape"):
        centre_watershed(np.zeros((4, 4)), np.zeros((5, 4)))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(2, 10), w=st.integers(2, 10), seed=st.integers(0, 2**16),
       method=st.sampled_from(["meanshift", "hdbscan"]), masked=st.booleans())
def test_cluster_embeddings_shape_and_scores(h, w, seed, method, masked) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(2, h, w)).astype(np.float32)
    mask = rng.random((h, w)) > 0.3 if masked else None
    lab, scores = cluster_embeddings(emb, method=method, bandwidth=0.8, mask=mask, min_size=2, max_samples=64)
    _is_instance_map(lab, (h, w))
    assert set(scores) == set(np.unique(lab[lab > 0]).tolist())
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    if mask is not None:
        assert not (lab > 0)[~mask].any()


def test_cluster_embeddings_rejects_bad_shapes() -> None:
    with pytest.raises(DataError):
        cluster_embeddings(np.zeros((4, 4), np.float32))


@SETTINGS
@given(n=st.integers(0, 40), radius=st.floats(0.5, 10.0), seed=st.integers(0, 2**16))
def test_distance_nms_keeps_separated_best_points(n, radius, seed) -> None:
    rng = np.random.default_rng(seed)
    pts = torch.as_tensor(rng.random((n, 2)) * 30, dtype=torch.float32)
    scores = torch.as_tensor(rng.random(n), dtype=torch.float32)
    keep = distance_nms(pts, scores, radius=radius)
    assert keep.dtype == torch.int64 and keep.ndim == 1 and len(set(keep.tolist())) == keep.numel()
    if n:
        assert int(keep[0]) == int(scores.argmax())
        kept = pts[keep]
        d = torch.cdist(kept, kept) + torch.eye(len(kept)) * 1e9
        assert bool((d >= radius - 1e-4).all())
        assert bool((scores[keep][:-1] >= scores[keep][1:]).all())


@SETTINGS
@given(pts=arrays(np.float64, st.tuples(st.integers(0, 12), st.just(2)), elements=st.floats(-20, 40)),
       shape=st.tuples(side, side), sigma=st.sampled_from([0.0, 1.5]))
def test_point_targets_drop_outside_points(pts, shape, sigma) -> None:
    heat = points_to_heatmap(pts, shape, sigma=sigma)
    assert heat.shape == shape and heat.dtype == np.float32 and np.isfinite(heat).all() and (heat >= 0).all()
    inside = np.all((np.rint(pts) >= 0) & (np.rint(pts) < np.asarray(shape)), axis=1)
    assert (heat.max(initial=0) > 0) == bool(inside.any())
    zone = point_zone(pts, shape, 2.0)
    assert zone.shape == shape and zone.dtype == bool and zone.any() == bool(inside.any())
    bad = np.vstack([pts, [[np.nan, 1.0]]])
    with pytest.raises(DataError, match="NaN"):
        points_to_heatmap(bad, shape)
