# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Point-detection post-processing: distance NMS, crop gather/scatter, instance painting, tiled inference.

Everything here is vectorised over detections and cells (no Python loop over instances) and the functions used by
the LACSS network (:func:`distance_nms`, :func:`crop_flat_index`, :func:`paint_instances`) are TorchScript-able.

Conventions: points are ``(y, x)`` pixel coordinates with pixel ``i`` centred on coordinate ``i``. A crop of side
``S`` with origin ``(y0, x0)`` covers pixels ``y0 .. y0 + S - 1`` (and the same for x); crops may stick out of the
image, the out-of-image part is flagged invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.transforms import MapTransform

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

__all__ = [
    "distance_nms",
    "crop_flat_index",
    "paste_crops",
    "gather_crops",
    "paint_instances",
    "remove_small_instances",
    "merge_tiles",
    "TiledInstanceInferer",
    "InstancesFromPredd",
    "InstancesFromPredD",
    "InstancesFromPredDict",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- distance NMS
def distance_nms(
    points: torch.Tensor,
    scores: torch.Tensor,
    radius: float = 8.0,
    max_output: int = 3072,
    min_score: float = 0.0,
) -> torch.Tensor:
    """Exact greedy distance non-maximum suppression of point detections, without a loop over detections.

    A detection is suppressed when a *kept* detection with a higher score lies closer than ``radius`` pixels (the
    LACSS rule ``1 / d^2 >= 1 / radius^2``). Memory is linear in the number of close pairs, never ``K x K``:

    1. the pairs closer than ``radius`` are enumerated with a bin grid of side ``radius`` (neighbours lie in the
       3x3 bins around a detection; the candidates of a bin are a contiguous range after sorting by bin, so all
       pairs come out of one ``repeat_interleave``);
    2. the greedy result is the fixed point of ``keep[j] = not any(keep[i] for close, higher-scored i)``
       (Cluster-NMS, Zheng et al. 2021): one scatter over the pairs per iteration, (longest suppression chain + 1)
       iterations, identical to the sequential greedy loop.

    Args:
        points: ``(K, 2)`` float positions.
        scores: ``(K,)`` scores.
        radius: suppression distance in pixels.
        max_output: at most this many detections are returned.
        min_score: candidates below this score are dropped first.

    Returns:
        indices into ``points`` of the kept detections, by decreasing score.
    """
    device = points.device
    idx = torch.arange(points.shape[0], device=device)
    ok = (scores >= min_score) & torch.isfinite(points).all(1)
    idx = idx[ok]
    k = idx.numel()
    if k == 0:
        return idx
    p = points[idx].float()
    s = scores[idx].float()
    order = torch.argsort(s, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k, device=device)
    lo = p.min(0)[0]
    g = torch.floor((p - lo) / radius).long()
    gh = int(g[:, 0].max().item()) + 2
    gw = int(g[:, 1].max().item()) + 2
    key = g[:, 0] * gw + g[:, 1]
    perm = torch.argsort(key)
    key_s = key[perm]
    offs = torch.tensor([-1, 0, 1], device=device)
    ny = g[:, 0:1, None] + offs[None, :, None]
    nx = g[:, 1:2, None] + offs[None, None, :]
    inb = ((ny >= 0) & (nx >= 0)).reshape(k, 9)
    nbin = (ny.clamp(min=0) * gw + nx.clamp(min=0)).reshape(k, 9)
    start = torch.searchsorted(key_s, nbin)
    stop = torch.searchsorted(key_s, nbin, right=True)
    length = torch.where(inb, stop - start, torch.zeros_like(start)).reshape(-1)
    total = int(length.sum().item())
    src = torch.repeat_interleave(torch.arange(k, device=device).repeat_interleave(9), length)
    first = torch.repeat_interleave(torch.cumsum(length, 0) - length, length)
    dst = perm[torch.repeat_interleave(start.reshape(-1), length) + torch.arange(total, device=device) - first]
    close = (p[src] - p[dst]).pow(2).sum(-1) < radius * radius
    sup_pair = close & (rank[src] < rank[dst])  # src would suppress dst
    src, dst = src[sup_pair], dst[sup_pair]
    keep = torch.ones(k, dtype=torch.bool, device=device)
    for _ in range(k + 1):
        hit = torch.zeros(k, dtype=torch.long, device=device)
        hit = hit.scatter_reduce(0, dst, keep[src].long(), reduce="amax", include_self=True)
        new_keep = hit == 0
        if bool(torch.equal(new_keep, keep)):
            break
        keep = new_keep
    out = idx[order[keep[order]]]
    if out.numel() > max_output:
        out = out[:max_output]
    return out


# --------------------------------------------------------------------------------------------------- crops
def crop_flat_index(
    origin: torch.Tensor, batch: torch.Tensor, crop_size: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into a ``(B * H * W)`` buffer of every pixel of every crop, and their in-image mask.

    Args:
        origin: ``(M, 2)`` integer top-left corners ``(y0, x0)`` (may be negative / beyond the image).
        batch: ``(M,)`` image index of each crop.
        crop_size: crop side ``S``.
        height, width: image size.

    Returns:
        ``(flat, valid)``, both ``(M, S, S)``; out-of-image pixels are clamped onto the border (``valid`` False).
    """
    r = torch.arange(crop_size, device=origin.device)
    yy = origin[:, 0:1].long() + r[None, :]
    xx = origin[:, 1:2].long() + r[None, :]
    vy = (yy >= 0) & (yy < height)
    vx = (xx >= 0) & (xx < width)
    valid = vy[:, :, None] & vx[:, None, :]
    flat = (
        batch.long()[:, None, None] * (height * width)
        + yy.clamp(0, height - 1)[:, :, None] * width
        + xx.clamp(0, width - 1)[:, None, :]
    )
    return flat, valid


def paste_crops(
    values: torch.Tensor,
    flat: torch.Tensor,
    valid: torch.Tensor,
    size: int,
    reduce: str = "sum",
    fill: float = 0.0,
) -> torch.Tensor:
    """Scatter per-crop values ``(M, S, S)`` into a flat image buffer of ``size`` elements (differentiable).

    ``reduce`` is ``"sum"`` (overlaps add, e.g. ``sum_j m_j``) or ``"amax"`` (pixel-wise max over crops). Pixels no
    crop covers hold ``fill``. Out-of-image crop pixels are neutralised (0 for sum, ``fill`` for amax).
    """
    neutral = 0.0 if reduce == "sum" else fill
    vals = torch.where(valid, values, torch.full_like(values, neutral))
    base = torch.full((size,), fill, dtype=values.dtype, device=values.device)
    return base.scatter_reduce(0, flat.reshape(-1), vals.reshape(-1), reduce=reduce, include_self=True)


def gather_crops(buffer: torch.Tensor, flat: torch.Tensor, valid: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Read a flat image buffer at every crop pixel: ``(M, S, S)``; out-of-image pixels get ``fill``."""
    vals = buffer.reshape(-1)[flat]
    return torch.where(valid, vals, torch.full_like(vals, fill))


# --------------------------------------------------------------------------------------------------- painting
def paint_instances(
    probs: torch.Tensor,
    origin: torch.Tensor,
    batch: torch.Tensor,
    scores: torch.Tensor,
    batch_size: int,
    height: int,
    width: int,
    mask_threshold: float = 0.5,
    min_area: int = 0,
) -> torch.Tensor:
    """Paint per-cell crop probabilities into instance label images; where cells overlap the higher score wins.

    Args:
        probs: ``(M, S, S)`` mask probabilities of the cells.
        origin: ``(M, 2)`` crop origins; ``batch``: ``(M,)`` image index; ``scores``: ``(M,)`` detection scores.
        batch_size, height, width: output size.
        mask_threshold: a pixel belongs to a cell when its probability is above this.
        min_area: cells left with fewer pixels are removed.

    Returns:
        ``(B, 2, H, W)`` float: channel 0 the instance ids (1..n per image by decreasing score, 0 background),
        channel 1 the score of the cell owning the pixel (0 on background).
    """
    m = probs.shape[0]
    hw = height * width
    out = torch.zeros((batch_size, 2, height, width), dtype=torch.float32, device=probs.device)
    if m == 0:
        return out
    order = torch.argsort(scores, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(m, device=probs.device)
    key = (m - rank).long()  # unique, larger for higher scores
    size = probs.shape[-1]
    sel = (probs > mask_threshold).reshape(-1).nonzero().squeeze(1)  # only the "on" pixels are touched
    cell = torch.div(sel, size * size, rounding_mode="floor")
    rem = sel - cell * size * size
    yy = origin[cell, 0].long() + torch.div(rem, size, rounding_mode="floor")
    xx = origin[cell, 1].long() + rem % size
    inb = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
    cell, yy, xx = cell[inb], yy[inb], xx[inb]
    flat = batch.long()[cell] * hw + yy * width + xx
    canvas = torch.zeros(batch_size * hw, dtype=torch.long, device=probs.device)
    canvas = canvas.scatter_reduce(0, flat, key[cell], reduce="amax", include_self=True)
    if min_area > 0:
        counts = torch.bincount(canvas, minlength=m + 1)
        small = counts < min_area
        small[0] = False
        canvas = torch.where(small[canvas], torch.zeros_like(canvas), canvas)
    # per-image ids by decreasing score: sort by (batch, rank)
    sort_key = batch.long() * (m + 1) + rank
    by_img = torch.argsort(sort_key)
    first_of_img = torch.searchsorted(sort_key[by_img], batch.long()[by_img] * (m + 1))
    ids = torch.empty(m, dtype=torch.long, device=probs.device)
    ids[by_img] = torch.arange(m, device=probs.device) - first_of_img + 1
    # painted key k -> rank m - k -> instance order[m - k]; background -> the extra slot m
    order_ext = torch.cat([order, torch.full((1,), m, dtype=order.dtype, device=probs.device)])
    inst = order_ext[torch.where(canvas > 0, m - canvas, torch.full_like(canvas, m))]
    ids_ext = torch.cat([ids, torch.zeros(1, dtype=torch.long, device=probs.device)])
    sc_ext = torch.cat([scores.float(), torch.zeros(1, dtype=torch.float32, device=probs.device)])
    out[:, 0] = ids_ext[inst].view(batch_size, height, width).float()
    out[:, 1] = sc_ext[inst].view(batch_size, height, width)
    return out


def remove_small_instances(label: np.ndarray, min_area: int) -> np.ndarray:
    """Set instances with fewer than ``min_area`` pixels to background, ids and dtype kept (the one implementation
    in :func:`monai_ext.postprocess.watershed.remove_small_instances`, without relabelling)."""
    from monai_ext.postprocess.watershed import remove_small_instances as _remove

    lab = np.asarray(label)
    if min_area <= 0 or not lab.any():
        return label
    return _remove(lab, int(min_area), relabel=False).astype(lab.dtype)


# --------------------------------------------------------------------------------------------------- tiling
def merge_tiles(
    tiles: Sequence[tuple[torch.Tensor, int, int]],
    batch_size: int,
    height: int,
    width: int,
    margin: int,
    min_visible: float = 0.5,
) -> torch.Tensor:
    """Merge per-tile instance predictions ``(B, 2, h, w)`` (ids, owner score) into one ``(B, 2, H, W)`` map.

    Edge handling: a tile keeps only the cells whose centroid lies in its *core*, i.e. at least ``margin`` pixels
    from a tile border that is not an image border (cells cut by the tile edge are seen whole by a neighbouring
    tile, as long as ``margin`` is larger than the cell radius). The kept cells of all tiles are then painted with
    the higher-score-wins rule and a cell that keeps less than ``min_visible`` of its pixels (a duplicate of a
    better-scored cell across a seam) is dropped (the mask NMS of LACSS, without an ``N x N`` IoU matrix).

    Args:
        tiles: ``(pred, y0, x0)`` per tile: the network output and where the tile starts.
        batch_size, height, width: output size.
        margin: core margin in pixels.
        min_visible: fraction of its pixels a cell must keep after painting.
    """
    device = tiles[0][0].device if tiles else torch.device("cpu")
    hw = height * width
    pix_all, inst_all, score_all = [], [], []
    n_inst = 0
    for pred, y0, x0 in tiles:
        b, _, h, w = pred.shape
        ids = pred[:, 0].round().long()
        sc = pred[:, 1].float()
        n_tile = int(ids.max().item()) if ids.numel() else 0
        if n_tile == 0:
            continue
        gid = torch.arange(b, device=device)[:, None, None] * (n_tile + 1) + ids  # per image-and-id index
        fg = ids.reshape(-1) > 0
        g = gid.reshape(-1)[fg]
        yy = (torch.arange(h, device=device)[None, :, None] + y0).expand(b, h, w).reshape(-1)[fg].float()
        xx = (torch.arange(w, device=device)[None, None, :] + x0).expand(b, h, w).reshape(-1)[fg].float()
        bb = torch.arange(b, device=device)[:, None, None].expand(b, h, w).reshape(-1)[fg]
        nb = b * (n_tile + 1)
        cnt = torch.bincount(g, minlength=nb).float()
        cy = torch.bincount(g, weights=yy, minlength=nb) / cnt.clamp(min=1)
        cx = torch.bincount(g, weights=xx, minlength=nb) / cnt.clamp(min=1)
        smax = torch.zeros(nb, device=device).scatter_reduce(0, g, sc.reshape(-1)[fg], "amax", include_self=True)
        lo_y = y0 + (margin if y0 > 0 else 0)
        hi_y = y0 + h - (margin if y0 + h < height else 0)
        lo_x = x0 + (margin if x0 > 0 else 0)
        hi_x = x0 + w - (margin if x0 + w < width else 0)
        core = (cy >= lo_y) & (cy < hi_y) & (cx >= lo_x) & (cx < hi_x) & (cnt > 0)
        keep = core[g]
        pix_all.append(bb[keep] * hw + yy[keep].long() * width + xx[keep].long())
        # renumber kept cells of this tile globally
        remap = torch.cumsum(core.long(), 0) - 1 + n_inst
        inst_all.append(remap[g[keep]])
        score_all.append(smax[core])
        n_inst += int(core.sum().item())
    out = torch.zeros((batch_size, 2, height, width), dtype=torch.float32, device=device)
    if n_inst == 0:
        return out
    pix = torch.cat(pix_all)
    inst = torch.cat(inst_all)
    scores = torch.cat(score_all)
    img_of = torch.zeros(n_inst, dtype=torch.long, device=device).scatter_reduce(
        0, inst, pix // hw, "amax", include_self=False
    )
    order = torch.argsort(scores, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_inst, device=device)
    key = n_inst - rank
    canvas = torch.zeros(batch_size * hw, dtype=torch.long, device=device)
    canvas = canvas.scatter_reduce(0, pix, key[inst], "amax", include_self=True)
    if min_visible > 0:
        total = torch.bincount(inst, minlength=n_inst).float()
        visible_by_key = torch.bincount(canvas, minlength=n_inst + 1).float()
        drop = visible_by_key[key] / total.clamp(min=1) < min_visible
        drop_key = torch.zeros(n_inst + 1, dtype=torch.bool, device=device)
        drop_key[key[drop]] = True
        canvas = torch.where(drop_key[canvas], torch.zeros_like(canvas), canvas)
    inst_of_key = torch.full((n_inst + 1,), -1, dtype=torch.long, device=device)
    inst_of_key[key] = torch.arange(n_inst, device=device)
    who = inst_of_key[canvas]
    fg = who >= 0
    # per-image ids 1..n by decreasing score, over the cells that survived
    alive = torch.bincount(canvas, minlength=n_inst + 1)[key] > 0
    big = 2 * (n_inst + 1)
    sort_key = torch.where(alive, img_of * big + rank, torch.full_like(rank, big * (batch_size + 1)))
    by_img = torch.argsort(sort_key)
    first = torch.searchsorted(sort_key[by_img], img_of[by_img] * big)
    ids = torch.zeros(n_inst, dtype=torch.long, device=device)
    ids[by_img] = torch.arange(n_inst, device=device) - first + 1
    lab = torch.zeros(batch_size * hw, dtype=torch.float32, device=device)
    sco = torch.zeros(batch_size * hw, dtype=torch.float32, device=device)
    lab[fg] = ids[who[fg]].float()
    sco[fg] = scores[who[fg]]
    out[:, 0] = lab.view(batch_size, height, width)
    out[:, 1] = sco.view(batch_size, height, width)
    return out


class TiledInstanceInferer(Inferer):
    """Instance-aware tiled inference for images larger than ``roi_size``.

    Instance maps cannot be blended like probabilities (what MONAI's ``SlidingWindowInferer`` does), so the image
    is cut into overlapping tiles, the network (whose output is ``(B, 2, h, w)``: instance ids and owner score)
    runs on each tile, and :func:`merge_tiles` keeps each cell from the tile where it is far from the tile edge.
    Images no larger than ``roi_size`` go through the network in one call.

    Args:
        roi_size: tile size ``(h, w)``.
        overlap: tile overlap in pixels; must exceed twice the largest cell radius (default: 2 x 64).
        min_visible: see :func:`merge_tiles`.
        method: name of the network method to call (``"forward"``; ``"predict"`` to use a training-mode LACSS
            principal network directly).
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int = 1024,
        overlap: int = 128,
        min_visible: float = 0.5,
        method: str = "forward",
    ) -> None:
        super().__init__()
        self.roi_size = (int(roi_size), int(roi_size)) if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
        if min(self.roi_size) <= 2 * overlap:
            raise ValueError(f"roi_size {self.roi_size} must be larger than twice the overlap {overlap}")
        self.overlap = int(overlap)
        self.min_visible = float(min_visible)
        self.method = method

    def _call(self, network: Callable[..., Any], x: torch.Tensor) -> torch.Tensor:
        net = getattr(network, "module", network)
        fn = net if self.method == "forward" else getattr(net, self.method)
        out = fn(x)
        return out["pred"] if isinstance(out, dict) else out

    @staticmethod
    def _starts(size: int, tile: int, step: int) -> list[int]:
        if size <= tile:
            return [0]
        starts = list(range(0, size - tile, step)) + [size - tile]
        return sorted(set(starts))

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        b, _, h, w = inputs.shape
        th, tw = self.roi_size
        if h <= th and w <= tw:
            return self._call(network, inputs)
        step_y, step_x = th - self.overlap, tw - self.overlap
        tiles = []
        for y0 in self._starts(h, th, step_y):
            for x0 in self._starts(w, tw, step_x):
                tile = inputs[:, :, y0 : y0 + th, x0 : x0 + tw]
                tiles.append((self._call(network, tile), y0, x0))
        return merge_tiles(tiles, b, h, w, margin=self.overlap // 2, min_visible=self.min_visible)


# --------------------------------------------------------------------------------------------------- transform
class InstancesFromPredd(MapTransform):
    """Turn the LACSS network output ``(2, H, W)`` (ids, owner score) into an int32 label tensor ``(1, H, W)`` + scores.

    Args:
        keys: the prediction key (replaced by the label image).
        scores_key: where the ``{id: score}`` dict goes (what :class:`~monai_ext.transforms.SaveInstancesd` writes).
        min_area: instances with fewer pixels are removed.
        group_from: dotted key of the sample's group (cell line / class) copied to ``group_key`` for per-class
            evaluation (``None``: no group); a missing entry gives ``""``.
    """

    backend = ["torch", "numpy"]

    def __init__(self, keys: str | Sequence[str] = "pred", scores_key: str = "scores", min_area: int = 0,
                 group_from: str | None = "meta.cell_line", group_key: str = "group",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scores_key = scores_key
        self.min_area = int(min_area)
        self.group_from = group_from
        self.group_key = group_key

    def _group(self, d: Mapping[Hashable, Any]) -> str:
        cur: Any = d
        for part in (self.group_from or "").split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return ""
            cur = cur[part]
        if isinstance(cur, (list, tuple)):
            cur = cur[0] if cur else ""
        return "" if cur is None else str(cur)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = to_numpy(d[key])
            if pred.ndim != 3 or pred.shape[0] != 2:
                raise DataError(f"expected a (2, H, W) LACSS prediction (ids, scores) under {key!r}, got {pred.shape}")
            label = np.rint(pred[0]).astype(np.int32)
            label = remove_small_instances(label, self.min_area)
            ids = label.ravel()
            sc = pred[1].ravel()
            fg = ids > 0
            best = np.zeros(int(ids.max()) + 1 if ids.size else 1, np.float64)
            np.maximum.at(best, ids[fg], sc[fg])
            present = np.unique(ids[fg])
            d[self.scores_key] = {int(i): float(best[i]) for i in present}
            d[key] = torch.as_tensor(label[None])  # a tensor: MONAI metrics and handlers expect one
        if self.group_from:
            d[self.group_key] = self._group(d)
        return d


InstancesFromPredD = InstancesFromPredDict = InstancesFromPredd
