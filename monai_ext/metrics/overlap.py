# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""One sparse overlap table per (ground truth, prediction) pair, from which every instance metric derives.

The table is a joint histogram of the two label images: for each pair of labels that share at least one
pixel, the number of shared pixels.  It is built in ``O(pixels)`` memory, never ``O(pixels x instances)``
and never a dense ``N x M`` matrix when that would be large, and it works for any integer dtype, any
(non-contiguous) ids, 2D and 3D.

Input contract (all metrics in :mod:`monai_ext.metrics` go through :func:`compute_overlap`):

- ``gt`` and ``pred`` are arrays (numpy, torch, MONAI ``MetaTensor``) of the **same shape**, at least 1D
  (2D ``(H, W)`` and 3D ``(D, H, W)`` are the usual cases; a leading channel axis of size 1 changes nothing
  because the metrics only count pixels; only the GT adjacency uses geometry).
- Any **integer** dtype (int8 ... uint64).  ``0`` is background; every other id is one instance; ids need
  not be contiguous or sorted.
- **bool** is rejected (a binary mask is not an instance map: cast it to an integer type to treat it as
  one instance), **float** is rejected (unless ``allow_integral_float=True``, then every value must be a
  finite whole number), so are complex, object and string arrays.
- **Negative ids** (``-1`` marks ignore regions in our pseudo-labels) are rejected by default; with
  ``ignore_negative=True`` every pixel that is negative in *either* image is dropped before counting, so
  instance areas and all counts cover the remaining pixels only.

All errors are :class:`monai_ext.errors.DataError` (a ``ValueError``) with a message that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy import ndimage
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching, min_weight_full_bipartite_matching

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

__all__ = [
    "InstanceOverlap",
    "compute_overlap",
    "as_label_array",
    "touching_instances",
    "max_iou_matching",
    "max_cardinality_matching_size",
]

_INT64_MAX = int(np.iinfo(np.int64).max)


def as_label_array(x: Any, name: str = "label", *, allow_integral_float: bool = False) -> np.ndarray:
    """Return ``x`` as an integer numpy array or raise :class:`DataError` saying why it is not an instance map.

    Args:
        x: numpy array, torch tensor / MetaTensor, or nested sequence of integers.
        name: how the error message calls the input (``"gt"``, ``"pred"``).
        allow_integral_float: accept a float array whose values are all finite whole numbers (cast to int64).
    """
    try:
        arr = to_numpy(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a data problem
        raise DataError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc
    if arr.ndim == 0:
        raise DataError(f"{name}: expected an instance label image with at least one axis, got a scalar")
    kind = arr.dtype.kind
    if kind == "b":
        raise DataError(
            f"{name}: boolean arrays are not instance label images; cast to an integer dtype "
            "(e.g. .astype(np.int32)) to treat the mask as a single instance"
        )
    if kind == "f":
        if not allow_integral_float:
            raise DataError(
                f"{name}: float dtype {arr.dtype} is not an instance label image; instance ids must be integers "
                "(cast with .astype(np.int32) / CastToTyped(dtype=torch.int32), or pass allow_integral_float=True)"
            )
        if arr.size and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
            raise DataError(f"{name}: float labels must be finite whole numbers to be used as instance ids")
        if arr.size and (arr.min() < np.iinfo(np.int64).min or arr.max() > np.iinfo(np.int64).max):
            raise DataError(f"{name}: float label values out of the int64 range")
        return arr.astype(np.int64)
    if kind not in "iu":
        raise DataError(f"{name}: dtype {arr.dtype} is not an integer dtype; instance ids must be integers")
    return arr


@dataclass(frozen=True, eq=False)
class InstanceOverlap:
    """Sparse overlap table of one (ground truth, prediction) pair of instance label images.

    Instances are indexed ``0..N-1`` (GT) and ``0..M-1`` (prediction) in increasing order of their ids.
    Only pairs that share at least one pixel are stored, sorted by (GT index, prediction index).

    Attributes:
        gt_ids: ``(N,)`` original GT ids (sorted, background excluded).
        pred_ids: ``(M,)`` original prediction ids (sorted, background excluded).
        gt_areas: ``(N,)`` pixel counts of the GT instances (over the evaluated pixels).
        pred_areas: ``(M,)`` pixel counts of the predicted instances.
        pair_gt: ``(K,)`` GT index of each overlapping pair.
        pair_pred: ``(K,)`` prediction index of each overlapping pair.
        pair_inter: ``(K,)`` intersection (pixels) of each pair, always > 0.
        n_pixels: number of evaluated pixels (all pixels, minus ignored ones).
        gt_adjacent: ``(N,)`` bool, GT instance touches another GT instance; ``None`` unless requested.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_inter: np.ndarray
    n_pixels: int
    gt_adjacent: np.ndarray | None = field(default=None)

    @property
    def n_gt(self) -> int:
        """Number of GT instances."""
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted instances."""
        return int(self.pred_ids.size)

    @property
    def n_pairs(self) -> int:
        """Number of overlapping (GT, prediction) pairs."""
        return int(self.pair_inter.size)

    @cached_property
    def pair_union(self) -> np.ndarray:
        """``(K,)`` union (pixels) of each overlapping pair."""
        return self.gt_areas[self.pair_gt] + self.pred_areas[self.pair_pred] - self.pair_inter

    @cached_property
    def pair_iou(self) -> np.ndarray:
        """``(K,)`` IoU of each overlapping pair (float64, exact ratio of two integers)."""
        return self.pair_inter / self.pair_union if self.n_pairs else np.zeros(0)

    @cached_property
    def pair_dice(self) -> np.ndarray:
        """``(K,)`` Dice ``2|G n S| / (|G| + |S|)`` of each overlapping pair."""
        if not self.n_pairs:
            return np.zeros(0)
        return 2.0 * self.pair_inter / (self.gt_areas[self.pair_gt] + self.pred_areas[self.pair_pred])

    @cached_property
    def gt_matched_pixels(self) -> np.ndarray:
        """``(N,)`` pixels of each GT instance covered by any predicted instance."""
        return np.bincount(self.pair_gt, weights=self.pair_inter, minlength=self.n_gt).astype(np.int64)

    @cached_property
    def pred_matched_pixels(self) -> np.ndarray:
        """``(M,)`` pixels of each predicted instance covered by any GT instance."""
        return np.bincount(self.pair_pred, weights=self.pair_inter, minlength=self.n_pred).astype(np.int64)

    @property
    def fg_intersection(self) -> int:
        """Pixels that are foreground in both images."""
        return int(self.pair_inter.sum())

    @property
    def gt_fg(self) -> int:
        """GT foreground pixels."""
        return int(self.gt_areas.sum())

    @property
    def pred_fg(self) -> int:
        """Predicted foreground pixels."""
        return int(self.pred_areas.sum())

    def dense_iou(self) -> np.ndarray:
        """``(N, M)`` dense IoU matrix; only for small cases (tests, plotting)."""
        out = np.zeros((self.n_gt, self.n_pred))
        out[self.pair_gt, self.pair_pred] = self.pair_iou
        return out

    def to_sparse(self) -> sparse.csr_array:
        """``(N, M)`` sparse intersection matrix (``scipy.sparse.csr_array``)."""
        return sparse.csr_array((self.pair_inter, (self.pair_gt, self.pair_pred)), shape=(self.n_gt, self.n_pred))

    def select_pred(self, keep: np.ndarray) -> InstanceOverlap:
        """Overlap with only the predictions where ``keep`` (``(M,)`` bool) is True.

        Equivalent to setting the dropped predictions' pixels to background (predictions are disjoint).
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_pred,):
            raise DataError(f"select_pred: expected a ({self.n_pred},) bool mask, got shape {keep.shape}")
        new_index = np.cumsum(keep) - 1
        pair_keep = keep[self.pair_pred]
        return InstanceOverlap(
            gt_ids=self.gt_ids,
            pred_ids=self.pred_ids[keep],
            gt_areas=self.gt_areas,
            pred_areas=self.pred_areas[keep],
            pair_gt=self.pair_gt[pair_keep],
            pair_pred=new_index[self.pair_pred[pair_keep]],
            pair_inter=self.pair_inter[pair_keep],
            n_pixels=self.n_pixels,
            gt_adjacent=self.gt_adjacent,
        )


def _group_ids(raw: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique non-zero ids of ``raw``, the summed ``counts`` per id, and each entry's index (-1 for 0)."""
    nz = raw != 0
    ids = np.unique(raw[nz])
    index = np.full(raw.shape, -1, dtype=np.intp)
    index[nz] = np.searchsorted(ids, raw[nz])
    areas = np.bincount(index[nz], weights=counts[nz], minlength=ids.size).astype(np.int64)
    return ids, areas, index


def _joint_histogram(g: np.ndarray, p: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(g, p)`` value pairs of two flat non-negative integer arrays and their pixel counts."""
    if method not in ("auto", "sort", "bincount"):
        raise ValueError(f"unknown overlap method {method!r}; use 'auto', 'sort' or 'bincount'")
    n = g.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    gmax, pmax = int(g.max()), int(p.max())
    if gmax > _INT64_MAX or pmax > _INT64_MAX:  # uint64 ids beyond int64
        return _remapped(g, p, dense=method == "bincount")
    width = pmax + 1
    cells = (gmax + 1) * width  # python int: no overflow
    if method == "bincount":
        if cells > max(n, 1 << 20):
            return _remapped(g, p, dense=True)  # LUT remap to 0..N / 0..M first
        return _dense_histogram(g, p, width, cells)
    if cells > _INT64_MAX:
        return _remapped(g, p, dense=False)
    return _sorted_histogram(g, p, width, cells)


def _joint_key(g: np.ndarray, p: np.ndarray, width: int, dtype: type) -> np.ndarray:
    """``g * width + p`` in ``dtype`` with a single image-sized allocation (values are known to fit)."""
    key = g.astype(dtype)
    np.multiply(key, dtype(width), out=key, casting="unsafe")
    np.add(key, p, out=key, casting="unsafe")
    return key


def _dense_histogram(g: np.ndarray, p: np.ndarray, width: int, cells: int) -> tuple[np.ndarray, ...]:
    """Joint histogram with one ``np.bincount`` over a dense ``cells``-long table."""
    table = np.bincount(_joint_key(g, p, width, np.intp), minlength=cells)
    cell = np.flatnonzero(table)
    return cell // width, cell % width, table[cell].astype(np.int64)


def _sorted_histogram(g: np.ndarray, p: np.ndarray, width: int, cells: int) -> tuple[np.ndarray, ...]:
    """Joint histogram by sorting the joint keys and counting runs (memory ``O(pixels)`` whatever ``cells``)."""
    n = g.size
    key = _joint_key(g, p, width, np.uint32 if cells < 1 << 32 else np.int64)
    key.sort()
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, n)).astype(np.int64)
    u = key[starts].astype(np.int64)
    return u // width, u % width, counts


def _remapped(g: np.ndarray, p: np.ndarray, dense: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint histogram after mapping each image's ids to ``0..K`` (0 stays 0), returned in original ids."""
    out_ids = []
    compact = []
    for x in (g, p):
        xmax = int(x.max())
        if xmax <= max(4 * x.size, 1 << 20):  # lookup table
            present = np.bincount(x.astype(np.intp, copy=False), minlength=1) > 0
            present[0] = True
            ids = np.flatnonzero(present)
            compact.append((np.cumsum(present, dtype=np.intp) - 1).take(x))
        else:  # huge ids (hashed labels, uint64): sort-based, slower but exact
            ids, inv = np.unique(np.append(x, x.dtype.type(0)), return_inverse=True)
            compact.append(inv[:-1].reshape(-1).astype(np.intp))
        out_ids.append(ids.astype(np.uint64 if ids.dtype == np.uint64 else np.int64))
    width = len(out_ids[1])
    cells = len(out_ids[0]) * width
    if dense and cells <= max(g.size, 1 << 20):
        gi, pi, counts = _dense_histogram(compact[0], compact[1], width, cells)
    else:
        gi, pi, counts = _sorted_histogram(compact[0], compact[1], width, cells)
    return out_ids[0][gi], out_ids[1][pi], counts


def touching_instances(labels: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Sorted ids of the instances that touch a *different* instance (background and negatives excluded).

    Two pixels touch when they are neighbours under ``scipy.ndimage.generate_binary_structure(ndim,
    connectivity)``; ``connectivity=None`` means full connectivity (8 in 2D, 26 in 3D), ``1`` means faces only.
    """
    labels = np.asarray(labels)
    ndim = labels.ndim
    connectivity = ndim if connectivity is None else int(connectivity)
    if not 1 <= connectivity <= max(ndim, 1):
        raise ValueError(f"connectivity must be in 1..{ndim}, got {connectivity}")
    struct = ndimage.generate_binary_structure(ndim, connectivity)
    centre = np.array(struct.shape) // 2
    found = [np.zeros(0, dtype=labels.dtype)]
    fg = labels > 0
    for offset in np.argwhere(struct) - centre:
        # each neighbour relation once: offsets in the positive half-space
        nonzero = offset[offset != 0]
        if nonzero.size == 0 or nonzero[0] < 0:
            continue
        a_sl = tuple(slice(max(-o, 0), labels.shape[d] - max(o, 0)) for d, o in enumerate(offset))
        b_sl = tuple(slice(max(o, 0), labels.shape[d] - max(-o, 0)) for d, o in enumerate(offset))
        a, b = labels[a_sl], labels[b_sl]
        touch = fg[a_sl] & fg[b_sl]
        touch &= a != b
        if touch.any():
            found += [a[touch], b[touch]]
    return np.unique(np.concatenate(found))


def compute_overlap(
    gt: Any,
    pred: Any,
    *,
    ignore_negative: bool = False,
    allow_integral_float: bool = False,
    adjacency: bool = False,
    connectivity: int | None = None,
    method: str = "auto",
) -> InstanceOverlap:
    """Build the sparse overlap table of one (GT, prediction) pair of instance label images.

    One pass over the pixels: the joint key ``gt * (max_pred + 1) + pred`` (``uint32`` when it fits) is
    sorted in place and its runs counted.  This is sparse by construction (no ``N x M`` table, whatever the
    ids) and, measured on one core, faster than remapping both images with lookup tables and one dense
    ``np.bincount`` (``method="bincount"``): 1024^2 with 500 instances 4.5 vs 23 ms, 2048^2 with 2000
    instances 20 vs 115 ms; even with contiguous ids and a small table the dense bincount was slower.
    Memory is about 5 bytes per pixel plus ``O(K)`` for the ``K`` overlapping pairs.  Ids too large for a
    63-bit joint key are first compacted with ``np.unique``.

    Args:
        gt: ground-truth instance labels (see the module docstring for accepted inputs).
        pred: predicted instance labels, same shape as ``gt``.
        ignore_negative: drop pixels that are negative in either image (``-1`` = ignore in pseudo-labels)
            instead of raising.
        allow_integral_float: accept float arrays holding whole numbers.
        adjacency: also flag GT instances touching another GT instance (``gt_adjacent``), needed by
            ``aji_adjacent`` / ``aji_non_adjacent``.
        connectivity: neighbourhood for ``adjacency`` (see :func:`touching_instances`).
        method: ``"auto"`` (= ``"sort"``), ``"sort"``, or ``"bincount"`` (lookup-table remap + one dense
            ``np.bincount`` over the ``(N+1) x (M+1)`` table, sort fallback when that table exceeds the pixel
            count; kept for cross-checks).

    Raises:
        DataError: mismatched shapes, non-integer / bool labels, negative ids without ``ignore_negative``.
    """
    g = as_label_array(gt, "gt", allow_integral_float=allow_integral_float)
    p = as_label_array(pred, "pred", allow_integral_float=allow_integral_float)
    if g.shape != p.shape:
        raise DataError(f"gt and pred must have the same shape, got gt {g.shape} and pred {p.shape}")
    geo = g
    g, p = g.reshape(-1), p.reshape(-1)
    g_neg = g.dtype.kind == "i" and g.size and g.min() < 0
    p_neg = p.dtype.kind == "i" and p.size and p.min() < 0
    if g_neg or p_neg:
        if not ignore_negative:
            which = " and ".join(n for n, neg in (("gt", g_neg), ("pred", p_neg)) if neg)
            raise DataError(
                f"{which}: negative instance ids found; -1 marks ignore regions in pseudo-labels: pass "
                "ignore_negative=True to leave those pixels out of every count"
            )
        keep = (g >= 0) & (p >= 0)
        g, p = g[keep], p[keep]
    gi, pi, counts = _joint_histogram(g, p, method)
    gt_ids, gt_areas, gidx = _group_ids(gi, counts)
    pred_ids, pred_areas, pidx = _group_ids(pi, counts)
    both = (gidx >= 0) & (pidx >= 0)
    adjacent = None
    if adjacency:
        touching = touching_instances(geo, connectivity)
        adjacent = np.isin(gt_ids, touching)
    return InstanceOverlap(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_areas=gt_areas,
        pred_areas=pred_areas,
        pair_gt=gidx[both],
        pair_pred=pidx[both],
        pair_inter=counts[both],
        n_pixels=int(g.size),
        gt_adjacent=adjacent,
    )


def max_iou_matching(ov: InstanceOverlap) -> np.ndarray:
    """Indices (into the pair arrays) of a one-to-one matching that maximises the summed IoU.

    This is the Hungarian matching of HoVer-Net's AJI+ / PQ (``linear_sum_assignment(-iou)``), solved on the
    sparse pair graph only: trivial components (pairs whose GT and prediction overlap nothing else) are
    matched directly, the rest by ``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp) on
    a graph padded with "unmatched" dummy nodes.  Among equally good matchings the solver's choice is kept.
    """
    k = ov.n_pairs
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    deg_g = np.bincount(ov.pair_gt, minlength=ov.n_gt)
    deg_p = np.bincount(ov.pair_pred, minlength=ov.n_pred)
    trivial = (deg_g[ov.pair_gt] == 1) & (deg_p[ov.pair_pred] == 1)
    rest = np.flatnonzero(~trivial)
    chosen = [np.flatnonzero(trivial)]
    if rest.size:
        # compact sub-problem over the non-trivial pairs
        g_ids, a = np.unique(ov.pair_gt[rest], return_inverse=True)
        p_ids, b = np.unique(ov.pair_pred[rest], return_inverse=True)
        n, m = g_ids.size, p_ids.size
        iou = ov.pair_iou[rest]
        # rows: n GT + m dummies; cols: m preds + n dummies. A full matching always exists
        # (GT i -> dummy col i, dummy row j -> pred j); every edge weighs 1 + IoU (real) or 1 (dummy),
        # so the max-weight full matching maximises the summed IoU of the real edges it uses.
        rows = np.concatenate([a, np.arange(n), n + b, n + np.arange(m)])
        cols = np.concatenate([b, m + np.arange(n), m + a, np.arange(m)])
        weights = np.concatenate([1.0 + iou, np.ones(n), np.ones(b.size), np.ones(m)])
        graph = sparse.csr_array((weights, (rows, cols)), shape=(n + m, n + m))
        row, col = min_weight_full_bipartite_matching(graph, maximize=True)
        real = (row < n) & (col < m)
        # map matched (row, col) back to pair indices
        pair_key = a.astype(np.int64) * m + b
        want = row[real].astype(np.int64) * m + col[real]
        order = np.argsort(pair_key)
        pos = order[np.searchsorted(pair_key[order], want)]
        chosen.append(rest[pos])
    return np.sort(np.concatenate(chosen))


def max_cardinality_matching_size(ov: InstanceOverlap, edges: np.ndarray) -> int:
    """Size of a maximum one-to-one matching using only the pairs where ``edges`` (``(K,)`` bool) holds.

    When every GT and prediction has at most one such pair (always the case for IoU > 0.5) this is the
    number of pairs; otherwise Hopcroft-Karp (``scipy.sparse.csgraph.maximum_bipartite_matching``).
    """
    sel = np.flatnonzero(edges)
    if sel.size == 0:
        return 0
    a, b = ov.pair_gt[sel], ov.pair_pred[sel]
    if np.bincount(a).max() <= 1 and np.bincount(b).max() <= 1:
        return int(sel.size)
    graph = sparse.csr_array((np.ones(sel.size), (a, b)), shape=(ov.n_gt, ov.n_pred))
    match = maximum_bipartite_matching(graph, perm_type="column")
    return int((match >= 0).sum())
