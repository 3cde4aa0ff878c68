# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Pixel embeddings -> instance labels (SPOCO inference): mean-shift, HDBSCAN and consistency clustering.

- ``"meanshift"``: flat-kernel mean-shift with ``bandwidth = delta_v`` and bin seeding (SPOCO uses
  ``sklearn.cluster.MeanShift(bandwidth, bin_seeding=True)``; :func:`mean_shift` is the same algorithm vectorised over
  seeds, because sklearn's one-job-per-seed loop takes minutes per image on 16-dimensional embeddings, where nearly
  every pixel has its own bin).
- ``"hdbscan"``: :class:`sklearn.cluster.HDBSCAN` with ``min_cluster_size = min_size`` (scaled to the fitted
  subsample) and ``cluster_selection_epsilon = delta_v`` (SPOCO uses the ``hdbscan`` package with the same
  parameters). scikit-learn 1.9 with NumPy 2.x fails in the epsilon search (scikit-learn issue 33219); the
  clustering then falls back to ``cluster_selection_epsilon = 0`` with a warning.
- ``"consistency"``: mean-shift (or, ``consistency_base="hdbscan"``, HDBSCAN) on the student embeddings ``f``; for
  every cluster, ``num_anchors`` of its pixels are drawn, each one's teacher embedding ``g(p)`` selects
  ``{i : ||g_i - g(p)|| < delta_v}``, and the cluster is kept only if the median IoU of these selections with the
  cluster reaches ``iou_threshold`` (SPOCO: 100 anchors, 0.6); dropped clusters become background (or, with
  ``drop_to="nearest"``, join the nearest kept cluster). The test presumes converged embeddings (every cluster
  within ``delta_v`` of its mean); ``consistency_radius`` widens the selections.

Speed: the clustering is fitted on at most ``max_samples`` pixels drawn (seeded) from the foreground; every other
foreground pixel gets the cluster of the nearest mode (mean-shift: exactly how sklearn labels points) or of its
nearest clustered fitted pixel (HDBSCAN, whose clusters need not be convex). HDBSCAN noise pixels are assigned the
same way instead of becoming holes (``assign_noise=False`` keeps SPOCO's behaviour: noise = background).

Foreground: a mask (the CVPPP ``*_fg.png``, key ``fg``) restricts clustering to it, as SPOCO's
``cluster_predictions.py`` does when the file exists. Without a mask, ``background="largest"`` sets the largest
cluster to background (SPOCO ``--remove-largest``: the background is one big unlabelled region, which the
unlabelled push and the consistency term make a compact cluster), ``background="none"`` keeps every cluster.
Clusters smaller than ``min_size`` pixels are merged into the nearest larger cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

__all__ = [
    "cluster_embeddings",
    "nearest_centre",
    "consistency_filter",
    "mean_shift",
    "SpocoClusterd",
    "SpocoClusterD",
    "SpocoClusterDict",
    "METHODS",
]

METHODS = ("meanshift", "hdbscan", "consistency")

logger = logging.getLogger(__name__)
_WARNED_EPSILON = False


def nearest_centre(points: np.ndarray, centres: np.ndarray, chunk_elements: int = 1 << 20,
                   dtype: Any = np.float32) -> np.ndarray:
    """Index of the nearest of ``centres`` ``(K, E)`` for every point ``(N, E)``.

    Squared distances up to the points' own norms, ``|c|^2 - 2 p.c``, as one matrix product per chunk of points:
    the points get a column of ones and the centres ``-2 c`` and the column ``|c|^2`` (BLAS does the whole sum,
    no pass over the ``N x K`` distances but the arg-min). In ``dtype`` (float32: half the memory traffic of
    float64 and several times faster than scikit-learn's brute-force neighbours on 16-dimensional embeddings); a
    chunk holds at most ``chunk_elements`` distances (4 MB in float32: they stay in cache for the arg-min), so
    memory stays bounded for any ``K``.
    """
    p_all = np.asarray(points, dtype)
    c = np.asarray(centres, dtype)
    if c.shape[0] == 0:
        raise ValueError("nearest_centre needs at least one centre")
    out = np.empty(p_all.shape[0], np.int64)
    c_aug = np.concatenate([-2 * c, (c * c).sum(1, keepdims=True)], 1).T.copy()  # (E + 1, K)
    rows = min(max(1, int(chunk_elements) // c.shape[0]), max(1, p_all.shape[0]))
    p_aug = np.ones((rows, p_all.shape[1] + 1), dtype)
    for s in range(0, p_all.shape[0], rows):  # chunks of points, bounded memory
        n = min(rows, p_all.shape[0] - s)
        p_aug[:n, :-1] = p_all[s: s + n]
        out[s: s + n] = (p_aug[:n] @ c_aug).argmin(1)
    return out


def _segment_means(points: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, points.shape[1]), np.float64)
    np.add.at(sums, labels, points)
    return sums / np.maximum(counts, 1)[:, None], counts


def mean_shift(points: np.ndarray, bandwidth: float, max_seeds: int = 400, seeding: str = "points",
               max_iter: int = 300, rng: np.random.Generator | None = None, chunk_elements: int = 1 << 23,
               ) -> np.ndarray:
    """Flat-kernel mean-shift modes of ``points`` ``(N, E)``, vectorised over seeds.

    The algorithm of :class:`sklearn.cluster.MeanShift`: every seed moves to the mean of the points within
    ``bandwidth`` until it moves less than ``1e-3 bandwidth`` (seeds without neighbours are dropped), and converged
    modes are kept in order of decreasing support, each suppressing the modes within ``bandwidth`` of it. All seeds
    move together as one matrix operation instead of one Python job per seed.

    Seeds: ``"bins"`` is sklearn's ``bin_seeding`` (centres of the ``bandwidth``-sized grid bins holding points);
    ``"points"`` (default) uses data points instead. In 16 dimensions nearly every point has its own bin and a bin
    centre lies up to ``bandwidth sqrt(E) / 2`` from its point, so whole tight clusters can end up without a seed
    within ``bandwidth``; data points always have one. At most ``max_seeds`` seeds are drawn (seeded, in proportion
    to the bin counts for ``"bins"``).

    Returns:
        the modes ``(K, E)``, most supported first.
    """
    if seeding not in ("points", "bins"):
        raise ValueError(f"seeding must be 'points' or 'bins', got {seeding!r}")
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.asarray(points, np.float64)
    if seeding == "bins":
        bins, counts = np.unique(np.round(x / bandwidth), axis=0, return_counts=True)
        seeds = bins * bandwidth
        if len(seeds) > max_seeds:
            seeds = seeds[np.sort(rng.choice(len(seeds), max_seeds, replace=False, p=counts / counts.sum()))]
    else:
        seeds = x[np.sort(rng.choice(len(x), max_seeds, replace=False))] if len(x) > max_seeds else x.copy()
    x2 = (x * x).sum(1)
    bw2 = bandwidth * bandwidth
    rows = max(1, chunk_elements // max(len(x), 1))

    def shift(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        means = np.empty_like(c)
        support = np.empty(len(c), np.int64)
        for s in range(0, len(c), rows):  # chunks of seeds, bounded memory
            cc = c[s: s + rows]
            near = ((cc * cc).sum(1)[:, None] + x2[None] - 2.0 * cc @ x.T) <= bw2
            n = near.sum(1)
            support[s: s + rows] = n
            means[s: s + rows] = (near.astype(np.float64) @ x) / np.maximum(n, 1)[:, None]
        return means, support

    centres = seeds.copy()
    active = np.ones(len(centres), bool)
    support = np.zeros(len(centres), np.int64)
    for _ in range(max_iter):  # iterations, each over all active seeds at once
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        new, n = shift(centres[idx])
        empty = n == 0
        moved = np.linalg.norm(new - centres[idx], axis=1)
        centres[idx[~empty]] = new[~empty]
        support[idx] = n
        active[idx[empty | (moved < 1e-3 * bandwidth)]] = False
    _, support = shift(centres)
    ok = support > 0
    centres, support = centres[ok], support[ok]
    if len(centres) == 0:
        return x.mean(0, keepdims=True)
    order = np.lexsort((np.arange(len(centres)), -support))
    centres = centres[order]
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    keep = np.ones(len(centres), bool)
    for i in range(len(centres)):  # greedy suppression over the (few hundred) modes, as sklearn
        if keep[i]:
            close = d2[i] < bw2
            close[: i + 1] = False
            keep[close] = False
    return centres[keep]


def _hdbscan(points: np.ndarray, min_size: int, epsilon: float, min_samples: int | None) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    kw = {"min_cluster_size": max(2, int(min_size)), "min_samples": min_samples, "copy": True}
    est = HDBSCAN(cluster_selection_epsilon=float(epsilon), **kw)
    try:
        return est.fit_predict(points)
    except TypeError as exc:  # scikit-learn#33219: epsilon search fails under NumPy >= 2.4
        if "0-dimensional" not in str(exc) or epsilon == 0:
            raise
        global _WARNED_EPSILON
        if not _WARNED_EPSILON:
            _WARNED_EPSILON = True
            logger.warning("sklearn HDBSCAN with cluster_selection_epsilon=%s failed (scikit-learn issue 33219 with "
                           "NumPy 2.x); clustering with cluster_selection_epsilon=0 (warned once)", epsilon)
    # the failure comes after the minimum spanning tree (nearly all the cost) is built: label from that tree
    # with epsilon 0 rather than fitting a second time (the same labels as a refit, in half the time)
    tree = getattr(est, "_single_linkage_tree_", None)
    if tree is not None:
        try:
            from sklearn.cluster._hdbscan._tree import tree_to_labels

            labels, _ = tree_to_labels(tree, est.min_cluster_size, est.cluster_selection_method,
                                       est.allow_single_cluster, 0.0, est.max_cluster_size)
            return np.asarray(labels)
        except (ImportError, TypeError, ValueError):  # private API of another scikit-learn version: refit
            pass
    return HDBSCAN(cluster_selection_epsilon=0.0, **kw).fit_predict(points)


def _fit(points: np.ndarray, method: str, bandwidth: float, min_size: int, hdbscan_min_samples: int | None,
         max_seeds: int, rng: np.random.Generator, seeding: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``points`` -> (labels of the points, -1 = noise; centres)."""
    if method == "hdbscan":
        labels = _hdbscan(points, min_size, bandwidth, hdbscan_min_samples)
        k = int(labels.max()) + 1
        if k == 0:
            return np.zeros(len(points), np.int64), points.mean(0, keepdims=True)
        centres, _ = _segment_means(points[labels >= 0], labels[labels >= 0], k)
        return labels, centres
    centres = mean_shift(points, bandwidth, max_seeds=max_seeds, seeding=seeding, rng=rng)
    return nearest_centre(points, centres), centres


def consistency_filter(
    labels: np.ndarray,
    emb_g: np.ndarray,
    bandwidth: float,
    iou_threshold: float = 0.6,
    num_anchors: int = 100,
    rng: np.random.Generator | None = None,
    chunk_elements: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray]:
    """SPOCO consistency test of clusters against teacher embeddings.

    Args:
        labels: ``(N,)`` cluster ids ``1..K`` (0 = background) of the flattened pixels.
        emb_g: ``(N, E)`` teacher embeddings of the same pixels.
        bandwidth: ``delta_v``: ``g`` selects the pixels within this distance of an anchor's teacher embedding.
        iou_threshold: minimum median IoU to keep a cluster.
        num_anchors: anchors drawn (with replacement) per cluster.
        rng: random generator.

    Returns:
        ``(keep (K + 1,) bool indexed by id, median_iou (K + 1,))`` (entry 0 is background).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    k = int(labels.max()) if labels.size else 0
    keep = np.zeros(k + 1, bool)
    med = np.zeros(k + 1)
    if k == 0:
        return keep, med
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    ids = np.nonzero(counts[1:])[0] + 1
    # anchors: num_anchors random members per cluster, drawn all at once
    offs = (rng.random((ids.size, num_anchors)) * counts[ids][:, None]).astype(np.int64)
    anchor_pix = order[starts[ids][:, None] + offs].reshape(-1)
    anchor_lab = np.repeat(ids, num_anchors)
    a = emb_g[anchor_pix].astype(np.float64)
    g = emb_g.astype(np.float64)
    g2 = (g * g).sum(1)
    rows = max(1, chunk_elements // max(len(g), 1))
    ious = np.empty(len(a))
    for s in range(0, len(a), rows):  # chunks of anchors, bounded memory
        aa = a[s: s + rows]
        d2 = (aa * aa).sum(1)[:, None] + g2[None] - 2.0 * aa @ g.T
        sel = d2 < bandwidth * bandwidth
        member = labels[None, :] == anchor_lab[s: s + rows, None]
        inter = (sel & member).sum(1)
        union = sel.sum(1) + counts[anchor_lab[s: s + rows]] - inter
        ious[s: s + rows] = (inter + 1e-5) / (union + 1e-5)
    med[ids] = np.median(ious.reshape(ids.size, num_anchors), axis=1)
    keep[ids] = med[ids] >= iou_threshold
    return keep, med


def cluster_embeddings(
    emb: Any,
    method: str = "meanshift",
    bandwidth: float = 0.5,
    mask: Any | None = None,
    teacher_emb: Any | None = None,
    min_size: int = 50,
    background: str = "largest",
    max_samples: int = 10000,
    iou_threshold: float = 0.6,
    num_anchors: int = 100,
    drop_to: str = "background",
    assign_noise: bool = True,
    hdbscan_min_samples: int | None = None,
    max_seeds: int = 400,
    seeding: str = "points",
    consistency_base: str = "meanshift",
    consistency_radius: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict[int, float]]:
    """Cluster pixel embeddings ``(E, *spatial)`` into an instance label image ``(*spatial)`` (int32, 0 = bg).

    Args:
        emb: student embeddings ``(E, *spatial)`` (array or tensor).
        method: ``"meanshift"``, ``"hdbscan"`` or ``"consistency"`` (needs ``teacher_emb``).
        bandwidth: mean-shift bandwidth, HDBSCAN ``cluster_selection_epsilon`` and the consistency radius
            (SPOCO: ``delta_v``).
        mask: optional foreground ``(*spatial)`` (or ``(1, *spatial)``); clustering happens inside it only.
        teacher_emb: teacher embeddings, same shape as ``emb`` (consistency clustering).
        min_size: clusters with fewer pixels merge into the nearest larger cluster; HDBSCAN ``min_cluster_size``
            (SPOCO CVPPP example: 200 at 448 px).
        background: without ``mask``: ``"largest"`` (largest cluster -> 0, SPOCO ``--remove-largest``) or
            ``"none"``. Ignored when a mask is given.
        max_samples: pixels used to fit the clustering (the rest get the nearest centre).
        iou_threshold, num_anchors: consistency clustering (SPOCO: 0.6, 100).
        drop_to: consistency clustering: a failed cluster becomes ``"background"`` (SPOCO) or joins the
            ``"nearest"`` kept cluster.
        assign_noise: HDBSCAN noise joins the nearest cluster (``False``: background, as SPOCO).
        hdbscan_min_samples: HDBSCAN ``min_samples`` (``None``: ``min_size``).
        max_seeds, seeding: mean-shift seeds (see :func:`mean_shift`).
        consistency_base: clustering whose clusters the consistency test filters: ``"meanshift"`` (SPOCO) or
            ``"hdbscan"``.
        consistency_radius: radius of the teacher's selections (``None``: ``bandwidth``, SPOCO's ``delta_v``). The
            test assumes converged embeddings (clusters within ``delta_v`` of their mean); after short trainings
            a larger radius keeps it from dropping good clusters.
        seed: seed of the pixel subsampling and of the consistency anchors.

    Returns:
        ``(labels, scores)``: int32 labels ``1..K`` and a per-instance confidence (the median consistency IoU for
        ``"consistency"``, else the mean kernel value ``exp(-d^2 ln2 / bandwidth^2)`` of the members to their
        centre).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if background not in ("largest", "none"):
        raise ValueError(f"background must be 'largest' or 'none', got {background!r}")
    if drop_to not in ("background", "nearest"):
        raise ValueError(f"drop_to must be 'background' or 'nearest', got {drop_to!r}")
    e = np.asarray(to_numpy(emb), np.float32)
    if e.ndim < 3:
        raise DataError(f"embeddings must be (E, *spatial) with 2 or 3 spatial axes, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise DataError("embeddings contain NaN or inf")
    E, spatial = e.shape[0], e.shape[1:]
    flat = e.reshape(E, -1).T
    n = flat.shape[0]
    if mask is not None:
        m = np.asarray(to_numpy(mask))
        if m.ndim == len(spatial) + 1 and m.shape[0] == 1:
            m = m[0]
        if m.shape != spatial:
            raise DataError(f"foreground mask shape {m.shape} does not match the embeddings' {spatial}")
        fg = m.reshape(-1) > 0
    else:
        fg = np.ones(n, bool)
    g_flat = None
    if method == "consistency":
        if teacher_emb is None:
            raise ValueError("consistency clustering needs teacher embeddings (teacher_emb)")
        g = np.asarray(to_numpy(teacher_emb), np.float32)
        if g.shape != e.shape:
            raise DataError(f"teacher embeddings {g.shape} do not match student embeddings {e.shape}")
        g_flat = g.reshape(E, -1).T
    out = np.zeros(n, np.int64)
    idx = np.nonzero(fg)[0]
    if idx.size == 0:
        return out.reshape(spatial).astype(np.int32), {}
    rng = np.random.default_rng(seed)
    pts = flat[idx].astype(np.float64)
    sample = np.sort(rng.choice(idx.size, max_samples, replace=False)) if idx.size > max_samples else np.arange(idx.size)
    if consistency_base not in ("meanshift", "hdbscan"):
        raise ValueError(f"consistency_base must be 'meanshift' or 'hdbscan', got {consistency_base!r}")
    fit_method = consistency_base if method == "consistency" else method
    # HDBSCAN's min_cluster_size counts fitted points: scale it to the subsample
    fit_min = max(2, int(round(min_size * len(sample) / idx.size)))
    sub_labels, centres = _fit(pts[sample], fit_method, bandwidth, fit_min, hdbscan_min_samples, max_seeds,
                               rng, seeding)
    if fit_method == "hdbscan":
        # density clusters need not be convex: every pixel takes the label of its nearest clustered fitted pixel
        lab = np.full(idx.size, -1, np.int64)
        lab[sample] = sub_labels
        clustered = sample[sub_labels >= 0]
        todo = np.nonzero(lab < 0)[0] if assign_noise else np.setdiff1d(np.arange(idx.size), sample)
        if todo.size and clustered.size:
            lab[todo] = lab[clustered][nearest_centre(pts[todo], pts[clustered])]
        if not assign_noise:  # SPOCO: HDBSCAN noise is background
            lab[sample[sub_labels < 0]] = -1
    else:
        lab = nearest_centre(pts, centres)
    # small clusters -> nearest large one (vectorised over clusters)
    k = centres.shape[0]
    valid = lab >= 0
    counts = np.bincount(lab[valid], minlength=k)
    big = counts >= min_size
    if big.any() and not big.all():
        remap = np.arange(k)
        small = np.nonzero(~big)[0]
        big_ids = np.nonzero(big)[0]
        remap[small] = big_ids[nearest_centre(centres[small], centres[big_ids])]
        lab = np.where(valid, remap[np.maximum(lab, 0)], -1)
    # relabel 1..K in order of decreasing size
    valid = lab >= 0
    counts = np.bincount(lab[valid], minlength=k)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(1, k + 1)
    lab = np.where(valid, rank[np.maximum(lab, 0)], 0)
    if mask is None and background == "largest" and lab.max() > 0:
        lab = np.where(lab == 1, 0, lab - 1)  # rank 1 is the largest cluster
    out[idx] = lab
    scores: dict[int, float]
    if method == "consistency" and out.max() > 0:
        radius = bandwidth if consistency_radius is None else float(consistency_radius)
        keep, med = consistency_filter(out, g_flat, radius, iou_threshold, num_anchors, rng)
        keep[0] = False
        if drop_to == "nearest" and keep.any():
            means, _ = _segment_means(flat[out > 0].astype(np.float64), out[out > 0], int(out.max()) + 1)
            kept = np.nonzero(keep)[0]
            target = kept[nearest_centre(means, means[kept])]
            remap = np.where(keep, np.arange(keep.size), target)
            remap[0] = 0
        else:
            remap = np.where(keep, np.arange(keep.size), 0)
        out = remap[out]
        scores_arr = med
    else:
        scores_arr = None
    # consecutive ids
    ids, inv = np.unique(out, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inv = inv + 1
    new = inv.reshape(-1).astype(np.int64)
    if scores_arr is not None:
        scores = {int(j): float(scores_arr[i]) for j, i in enumerate(ids) if j > 0}
    else:
        scores = {}
        if new.max() > 0:
            means, cnt = _segment_means(flat[new > 0].astype(np.float64), new[new > 0], int(new.max()) + 1)
            d2 = ((flat[new > 0] - means[new[new > 0]]) ** 2).sum(1)
            kv = np.exp(-d2 * np.log(2.0) / bandwidth ** 2)
            s = np.bincount(new[new > 0], weights=kv, minlength=int(new.max()) + 1) / np.maximum(cnt, 1)
            scores = {int(j): float(s[j]) for j in range(1, int(new.max()) + 1)}
    return new.reshape(spatial).astype(np.int32), scores


class SpocoClusterd(MapTransform):
    """Dictionary transform: embeddings in ``d[key]`` -> instance labels ``(1, *spatial)`` in ``d[key]`` (int32; a
    tensor when the input was one, as MONAI metric handlers expect).

    ``d[key]`` is ``(E, *spatial)``, or ``(2E, *spatial)`` when the inferer concatenated student and teacher
    embeddings (consistency clustering; :class:`~monai_ext.engines.spoco.SpocoInferer` with a teacher). The
    embeddings can be kept under ``embedding_key``; per-instance confidences go to ``d[scores_key]``.

    Args:
        keys: the prediction key (one).
        embedding_dim: ``E``; ``None``: the whole channel axis (or half of it for ``"consistency"``).
        mask_key: optional foreground mask key (e.g. ``"fg"`` from the CVPPP reader with ``load_fg=True``);
            missing keys fall back to the ``background`` rule.
        scores_key: where to put ``{instance id: score}``.
        embedding_key: keep the embeddings under this key (``None``: drop them).
        **cluster_kwargs: :func:`cluster_embeddings` arguments (``method``, ``bandwidth``, ``min_size``, ...).
    """

    backend = ["numpy"]

    def __init__(
        self,
        keys: str = "pred",
        embedding_dim: int | None = None,
        mask_key: str | None = "fg",
        scores_key: str = "scores",
        embedding_key: str | None = None,
        allow_missing_keys: bool = False,
        **cluster_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.embedding_dim = embedding_dim
        self.mask_key = mask_key
        self.scores_key = scores_key
        self.embedding_key = embedding_key
        self.cluster_kwargs = dict(cluster_kwargs)
        method = self.cluster_kwargs.get("method", "meanshift")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            arr = np.asarray(to_numpy(d[key]), np.float32)
            method = self.cluster_kwargs.get("method", "meanshift")
            c = arr.shape[0]
            e_dim = self.embedding_dim or (c // 2 if method == "consistency" else c)
            teacher = None
            if method == "consistency":
                if c < 2 * e_dim:
                    raise DataError(f"consistency clustering needs student + teacher embeddings (2 x {e_dim} "
                                    f"channels), got {c}; give the inferer the teacher network")
                teacher = arr[e_dim: 2 * e_dim]
            elif c < e_dim:
                raise DataError(f"prediction has {c} channels, fewer than embedding_dim={e_dim}")
            mask = d.get(self.mask_key) if self.mask_key else None
            labels, scores = cluster_embeddings(arr[:e_dim], mask=mask, teacher_emb=teacher, **self.cluster_kwargs)
            if self.embedding_key:
                d[self.embedding_key] = arr[:e_dim]
            d[key] = torch.as_tensor(labels[None]) if isinstance(d[key], torch.Tensor) else labels[None]
            d[self.scores_key] = scores
        return d


SpocoClusterD = SpocoClusterDict = SpocoClusterd
