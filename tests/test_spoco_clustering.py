"""Embedding clustering: mean-shift (vs sklearn), HDBSCAN, consistency clustering, foreground / background rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.errors import DataError
from monai_ext.metrics import sbd
from monai_ext.postprocess.clustering import (
    SpocoClusterd,
    cluster_embeddings,
    consistency_filter,
    mean_shift,
    nearest_centre,
)


def _scene(seed: int = 0, noise: float = 0.08, e_dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 label image (background + 5 blobs) and embeddings: one random centre per label + noise."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((40, 40), np.int32)
    lab[2:15, 2:15] = 1
    lab[2:15, 20:38] = 2
    lab[20:30, 2:12] = 3
    lab[20:38, 15:25] = 4
    lab[30:38, 30:38] = 5
    centres = rng.normal(0, 1.5, (6, e_dim))
    emb = centres[lab] + rng.normal(0, noise, lab.shape + (e_dim,))
    return emb.transpose(2, 0, 1).astype(np.float32), lab


def test_mean_shift_equals_sklearn_with_bin_seeds() -> None:
    from sklearn.cluster import MeanShift

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.1, (60, 3)) for c in ((0, 0, 0), (2, 0, 0), (0, 3, 1))])
    ours = mean_shift(x, 0.5, max_seeds=10**6, seeding="bins")
    ref = MeanShift(bandwidth=0.5, bin_seeding=True).fit(x).cluster_centers_
    assert ours.shape == ref.shape
    assert np.allclose(np.sort(ours, axis=0), np.sort(ref, axis=0), atol=1e-6)


def test_point_seeding_finds_tight_clusters_in_high_dimension() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (12, 16))
    lab = rng.integers(0, 12, 3000)
    x = centres[lab] + rng.normal(0, 0.06, (3000, 16))
    modes = mean_shift(x, 0.5, max_seeds=300, rng=np.random.default_rng(0))
    assert len(modes) == 12
    assigned = nearest_centre(x, modes)
    assert len(np.unique(assigned)) == 12 and all(len(np.unique(assigned[lab == k])) == 1 for k in range(12))


@pytest.mark.parametrize("method", ["meanshift", "hdbscan"])
def test_recovers_instances_with_background_rule(method: str) -> None:
    emb, lab = _scene()
    pred, scores = cluster_embeddings(emb, method=method, bandwidth=0.5, min_size=20, background="largest")
    assert sbd(lab, pred) > 0.99
    assert set(scores) == set(range(1, int(pred.max()) + 1))
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_foreground_mask_restricts_clustering() -> None:
    emb, lab = _scene(2)
    fg = lab > 0
    pred, _ = cluster_embeddings(emb, bandwidth=0.5, mask=fg[None], min_size=20)
    assert np.all(pred[~fg] == 0) and np.all(pred[fg] > 0)
    assert sbd(lab, pred) > 0.99
    with pytest.raises(DataError, match="mask"):
        cluster_embeddings(emb, mask=fg[:10])


def test_small_clusters_merge_and_subsampling_is_seeded() -> None:
    emb, lab = _scene(3)
    emb[:, 0, 0] += 50.0  # one outlier pixel
    a, _ = cluster_embeddings(emb, bandwidth=0.5, min_size=10, max_samples=500, seed=4)
    b, _ = cluster_embeddings(emb, bandwidth=0.5, min_size=10, max_samples=500, seed=4)
    assert np.array_equal(a, b)
    assert int(a.max()) == 5  # 6 clusters (bg + 5), outlier merged, largest (bg) removed
    assert sbd(lab, a) > 0.95


def test_consistency_clustering_drops_inconsistent_clusters() -> None:
    emb, lab = _scene(5)
    teacher = emb.copy()
    # in the teacher, instance 3 is scattered: its pixels do not agree with each other
    rng = np.random.default_rng(0)
    teacher[:, lab == 3] = rng.normal(0, 3, (emb.shape[0], int((lab == 3).sum())))
    pred, scores = cluster_embeddings(emb, method="consistency", teacher_emb=teacher, bandwidth=0.5,
                                      mask=lab > 0, min_size=20)
    assert np.all(pred[lab == 3] == 0)
    kept = np.unique(pred[pred > 0])
    assert len(kept) == 4 and all(scores[int(k)] >= 0.6 for k in kept)
    near, _ = cluster_embeddings(emb, method="consistency", teacher_emb=teacher, bandwidth=0.5, mask=lab > 0,
                                 min_size=20, drop_to="nearest")
    assert np.all(near[lab > 0] > 0)
    with pytest.raises(ValueError, match="teacher"):
        cluster_embeddings(emb, method="consistency")


def test_consistency_filter_identical_teacher_keeps_all() -> None:
    emb, lab = _scene(6)
    flat = emb.reshape(emb.shape[0], -1).T
    keep, med = consistency_filter(lab.reshape(-1), flat, 0.5)
    assert keep[1:].all() and not keep[0] and np.all(med[1:] > 0.95)


def test_dict_transform_with_student_and_teacher_channels() -> None:
    emb, lab = _scene(7)
    both = torch.as_tensor(np.concatenate([emb, emb], 0))
    d = SpocoClusterd("pred", method="consistency", bandwidth=0.5, min_size=20)({"pred": both, "fg": (lab > 0)[None]})
    assert d["pred"].shape == (1, 40, 40) and d["pred"].dtype == torch.int32
    assert sbd(lab, d["pred"][0].numpy()) > 0.99 and d["scores"]
    d2 = SpocoClusterd("pred", bandwidth=0.5, min_size=20, mask_key="fg")({"pred": emb})  # no fg: largest rule
    assert sbd(lab, d2["pred"][0]) > 0.99
    with pytest.raises(DataError, match="teacher"):
        SpocoClusterd("pred", method="consistency", embedding_dim=8)({"pred": emb})


def test_non_finite_embeddings_raise() -> None:
    emb, _ = _scene()
    emb[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        cluster_embeddings(emb)


def test_3d_volume() -> None:
    emb, lab = _scene(8, e_dim=4)
    vol_lab = np.stack([lab, lab, lab])
    vol = np.stack([emb, emb, emb], axis=1)
    pred, _ = cluster_embeddings(vol, bandwidth=0.5, mask=vol_lab > 0, min_size=20)
    assert pred.shape == vol_lab.shape and sbd(vol_lab, pred) > 0.99


def test_nearest_centre_matches_brute_force_in_bounded_chunks() -> None:
    rng = np.random.default_rng(3)
    pts, ref = rng.normal(size=(1000, 16)), rng.normal(size=(300, 16))
    brute = ((pts[:, None, :] - ref[None]) ** 2).sum(-1).argmin(1)
    # chunks of 7 points at a time (2100 distances) give the same answer as one pass
    assert (nearest_centre(pts, ref, chunk_elements=2100) == brute).all()
    assert (nearest_centre(pts, ref, dtype=np.float64) == brute).all()
    with pytest.raises(ValueError, match="at least one centre"):
        nearest_centre(pts, ref[:0])


def test_hdbscan_epsilon_fallback_labels_from_the_fitted_tree() -> None:
    """When scikit-learn's epsilon search fails (issue 33219) the labels come from the already-built tree with
    epsilon 0: identical to a refit with epsilon 0."""
    from sklearn.cluster import HDBSCAN

    from monai_ext.postprocess.clustering import _hdbscan

    emb, _ = _scene(5, noise=0.3)
    pts = emb.reshape(emb.shape[0], -1).T.astype(np.float64)
    got = _hdbscan(pts, 20, 0.5, None)
    refit = HDBSCAN(min_cluster_size=20, cluster_selection_epsilon=0.0, copy=True).fit_predict(pts)
    try:
        direct = HDBSCAN(min_cluster_size=20, cluster_selection_epsilon=0.5, copy=True).fit_predict(pts)
    except TypeError:  # the scikit-learn bug: our labels are the epsilon-0 ones
        assert (got == refit).all()
    else:
        assert (got == direct).all()
    assert got.max() >= 4  # the five blobs (and background) are found, not one cluster
