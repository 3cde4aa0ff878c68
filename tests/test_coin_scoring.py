"""COIN instance-level confidence: windows, exact IoU scores, adaptive threshold, pseudo-labels, round merging."""

from __future__ import annotations

import numpy as np
import pytest

from monai_ext.errors import DataError
from monai_ext.pseudo.scoring import (
    RefinedMasks,
    adaptive_threshold,
    build_pseudo_labels,
    consistency_scores,
    gather_windows,
    instance_centroids,
    instance_ids,
    merge_with_previous,
    paste_windows,
    window_origins,
)
from monai_ext.transforms.coin import IGNORE_INDEX


def _label() -> np.ndarray:
    lab = np.zeros((40, 50), np.int32)
    lab[5:15, 5:15] = 1
    lab[20:30, 20:34] = 4  # non-contiguous ids
    lab[30:38, 40:48] = 7
    return lab


def _refined_from(lab: np.ndarray, window: int = 24, shift: dict[int, int] | None = None) -> RefinedMasks:
    """Refined masks = the prediction itself, optionally shifted right by ``shift[id]`` pixels."""
    ids = instance_ids(lab)
    pts = instance_centroids(lab, ids)
    origins = window_origins(pts, window)
    masks = gather_windows(lab, origins, window) == ids[:, None, None]
    for k, i in enumerate(ids):
        if shift and i in shift:
            masks[k] = np.roll(masks[k], shift[i], axis=1)
    return RefinedMasks(ids, origins, masks, points=pts)


def test_windows_gather_and_paste_roundtrip() -> None:
    lab = _label()
    ref = _refined_from(lab)
    back = paste_windows(lab.shape, ref.masks, ref.origins, ref.ids)
    assert np.array_equal(back, lab)
    # windows sticking out of the image are filled
    crop = gather_windows(lab, np.array([[-5, -5]]), 8, fill=-3)
    assert crop.shape == (1, 8, 8) and (crop[0, :5] == -3).all()


def test_centroids_and_inside_points() -> None:
    lab = np.zeros((30, 30), np.int32)
    lab[5:25, 5:8] = 1
    lab[22:25, 5:25] = 1  # L shape: centroid may leave the instance, "inside" never does
    c = instance_centroids(lab)
    inside = instance_centroids(lab, inside=True).astype(int)
    assert c.shape == (1, 2)
    assert lab[inside[0, 0], inside[0, 1]] == 1


def test_consistency_scores_are_exact_ious() -> None:
    lab = _label()
    ref = _refined_from(lab, shift={4: 2})
    s = consistency_scores(lab, ref)
    assert s[0] == pytest.approx(1.0) and s[2] == pytest.approx(1.0)
    # brute force for the shifted one
    full = paste_windows(lab.shape, ref.masks[1:2], ref.origins[1:2], np.array([1]))
    a, b = lab == 4, full == 1
    assert s[1] == pytest.approx((a & b).sum() / (a | b).sum())
    # refined area spilling outside the window lowers the score
    ref.extra_area[0] = 100
    assert consistency_scores(lab, ref)[0] == pytest.approx(100 / 200)


def test_adaptive_threshold() -> None:
    s = np.array([0.2, 0.4, 0.9, 0.95])
    assert adaptive_threshold(s, "mean+std") == pytest.approx(min(s.mean() + s.std(), 0.9))
    assert adaptive_threshold(s, "mean") == pytest.approx(s.mean())
    assert adaptive_threshold(np.array([0.1, 0.2]), "mean+std") == pytest.approx(0.15 + 0.05)
    assert adaptive_threshold(s, 0.5) == 0.5
    assert adaptive_threshold(np.array([]), "mean+std") == 0.9
    with pytest.raises(ValueError):
        adaptive_threshold(s, "median")


def test_build_pseudo_labels_semantics() -> None:
    lab = _label()
    ref = _refined_from(lab, shift={4: 3})
    scores = consistency_scores(lab, ref)
    out = build_pseudo_labels(lab, ref, scores, threshold=0.9)
    inst, seg, edge = out["instances"], out["seg"], out["edge"]
    assert set(out["accepted"].tolist()) == {1, 7}
    # accepted instances take their refined mask; the rejected one's predicted pixels are ignore
    assert (inst[lab == 1] > 0).all() and (inst[lab == 7] > 0).all()
    assert (inst[lab == 4] == -1).all() and (seg[lab == 4] == IGNORE_INDEX).all()
    assert (seg[lab == 0] == 0).all() and set(np.unique(seg)) <= {0, 1, IGNORE_INDEX}
    # edges: on the accepted contours only, 255 where ignored
    assert edge[5, 5] == 1 and edge[10, 10] == 0 and (edge[lab == 4] == IGNORE_INDEX).all()
    with pytest.raises(DataError):
        build_pseudo_labels(lab, ref, scores[:1], 0.5)


def test_refined_mask_replaces_prediction() -> None:
    lab = _label()
    ref = _refined_from(lab, shift={1: 1})
    out = build_pseudo_labels(lab, ref, np.ones(3), threshold=0.5)
    accepted_1 = out["instances"] == out["instances"][10, 10]
    assert accepted_1[10, 15] and not accepted_1[10, 5]  # the refined (shifted) mask, not the prediction


def test_merge_with_previous_grows_accepted_set() -> None:
    prev = np.zeros((20, 20), np.int32)
    prev[2:6, 2:6] = 1
    prev[10:14, 10:14] = 2
    cur = np.full((20, 20), 0, np.int32)
    cur[10:14, 11:15] = 1  # overlaps previous 2 a lot -> replaces it
    cur[2:6, 2:4] = -1  # ignored now, but previous 1 does not meet a new accepted instance -> kept
    out = merge_with_previous(cur, prev, max_overlap=0.2)
    assert out.max() == 2
    assert (out[2:6, 2:6] > 0).all() and out[3, 3] != out[11, 12]
    assert (out[10:14, 11:15] == 1).all() and out[10, 10] == 0
    assert np.array_equal(merge_with_previous(cur, None), cur)
    with pytest.raises(DataError):
        merge_with_previous(cur, prev[:5])


def test_edge_width_band_inside_instances() -> None:
    from monai_ext.transforms.coin import instance_edges, instances_to_targets

    lab = np.zeros((20, 30), np.int32)
    lab[2:12, 2:12] = 1
    lab[2:12, 12:22] = 2  # touching the first one
    lab[14:18, 24:28] = -1  # ignore: never an edge
    thin, thick = instance_edges(lab), instance_edges(lab, width=2)
    assert thin.sum() == 2 * (4 * 10 - 4)  # each 10x10 square's 1-pixel contour
    assert thick.sum() == 2 * (100 - 36)  # 2-pixel band: the square minus its 6x6 core
    assert (thin <= thick).all() and not (thick & (lab <= 0)).any()
    assert thick[7, 10:14].all() and thick[7, 2:12].sum() == 4  # touching nuclei: a 4-pixel separating band
    seg, edge = instances_to_targets(lab, edge_width=2)
    assert (edge == 1).sum() == thick.sum() and (edge[lab < 0] == IGNORE_INDEX).all() and (seg[lab < 0] == 255).all()
