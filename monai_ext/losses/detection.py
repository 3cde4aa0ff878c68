# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Point-detection loss of LACSS / CKS (Yu 2023, Eq. 3): focal BCE on the score map D and a regression loss on the
offsets D_s, summed over the pyramid levels s::

    L_det = sum_s L_fce(D, D^GT) + || D_s - D_s^GT ||

Targets (label smoothing of the paper, ``detection_roi`` of the code): the grid cell with centre
``c = (g + 0.5) * s - 0.5`` (pixel coordinates) is positive when the nearest ground-truth point ``p`` is closer than
``detection_roi`` pixels; its offset target is ``(p - c) / s`` (grid units). Targets are built by a scatter over a
small window of cells around every point (no dense point x cell distance matrix), so thousands of points are cheap.

Deviations, as options (defaults follow the paper where it is explicit):

- ``offset_loss``: paper ``"l2"`` (squared error); code ``"huber"`` (delta 1).
- ``normalize``: the focal sum is divided by the total number of grid cells (``"cells"``, released code) or by the
  number of positive cells (``"positives"``, RetinaNet); the offset sum always by the number of positives
  (paper-era code).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

__all__ = ["PointDetectionLoss", "detection_targets"]


def detection_targets(
    points: torch.Tensor, valid: torch.Tensor, stride: int, height: int, width: int, roi: float = 8.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and offset targets of one pyramid level.

    Args:
        points: ``(B, N, 2)`` ground-truth points (padded), ``valid``: ``(B, N)``.
        stride: level stride ``s``; ``height``, ``width``: level grid size.
        roi: positive radius in image pixels.

    Returns:
        ``score (B, 1, h, w)`` in {0, 1} and ``offset (B, 2, h, w)`` (grid units; 0 where negative).
    """
    bsz = points.shape[0]
    device = points.device
    n_cells = bsz * height * width
    score = torch.zeros(n_cells, device=device)
    offset = torch.zeros(n_cells, 2, device=device)
    bidx, pidx = torch.nonzero(valid, as_tuple=True)
    if bidx.numel() == 0:
        return score.view(bsz, 1, height, width), offset.view(bsz, height, width, 2).permute(0, 3, 1, 2)
    p = points[bidx, pidx].float()  # (P, 2)
    k = int(math.ceil(roi / stride)) + 1
    rng = torch.arange(-k, k + 1, device=device)
    g0 = torch.floor((p + 0.5) / stride).long()  # cell containing the point
    gy = g0[:, 0:1, None] + rng[None, :, None]
    gx = g0[:, 1:2, None] + rng[None, None, :]
    gy, gx = torch.broadcast_tensors(gy, gx)  # (P, 2k+1, 2k+1)
    cy = (gy.float() + 0.5) * stride - 0.5
    cx = (gx.float() + 0.5) * stride - 0.5
    dy = p[:, 0, None, None] - cy
    dx = p[:, 1, None, None] - cx
    dist = torch.sqrt(dy * dy + dx * dx)
    inb = (gy >= 0) & (gy < height) & (gx >= 0) & (gx < width)
    pos = inb & (dist < roi)
    flat = (bidx[:, None, None] * height * width + gy.clamp(0, height - 1) * width + gx.clamp(0, width - 1))[pos]
    d = dist[pos]
    dmin = torch.full((n_cells,), float("inf"), device=device).scatter_reduce(0, flat, d, "amin", include_self=True)
    nearest = d <= dmin[flat]  # the nearest point of each positive cell (ties: any of them)
    score[flat] = 1.0
    off = torch.stack([dy[pos], dx[pos]], -1) / stride
    offset[flat[nearest]] = off[nearest]
    return score.view(bsz, 1, height, width), offset.view(bsz, height, width, 2).permute(0, 3, 1, 2)


class PointDetectionLoss(nn.Module):
    """``L_det`` (see the module docstring). ``forward`` returns ``(focal_term, offset_term)``.

    Args:
        detection_roi: positive radius in pixels (8).
        gamma: focal exponent (2; no alpha balancing, as LACSS).
        offset_loss: ``"l2"`` (paper) or ``"huber"`` (code, delta 1).
        normalize: ``"cells"`` (code) or ``"positives"`` for the focal term.
    """

    def __init__(self, detection_roi: float = 8.0, gamma: float = 2.0, offset_loss: str = "l2",
                 normalize: str = "cells") -> None:
        super().__init__()
        if offset_loss not in ("l2", "huber"):
            raise ValueError(f"offset_loss must be 'l2' or 'huber', got {offset_loss!r}")
        if normalize not in ("cells", "positives"):
            raise ValueError(f"normalize must be 'cells' or 'positives', got {normalize!r}")
        self.roi = float(detection_roi)
        self.gamma = float(gamma)
        self.offset_loss = offset_loss
        self.normalize = normalize

    def forward(self, det_logits: list[torch.Tensor], det_offsets: list[torch.Tensor], strides: list[int],
                points: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        focal = det_logits[0].new_zeros(())
        reg = det_logits[0].new_zeros(())
        n_cells = 0
        n_pos = 0.0
        for logit, off, s in zip(det_logits, det_offsets, strides):
            _, _, h, w = logit.shape
            tgt, tgt_off = detection_targets(points, valid, int(s), h, w, self.roi)
            focal = focal + sigmoid_focal_loss(logit, tgt.to(logit.dtype), alpha=-1, gamma=self.gamma, reduction="sum")
            pos = tgt[:, 0] > 0  # (B, h, w)
            if pos.any():
                pred = off.permute(0, 2, 3, 1)[pos]
                target = tgt_off.permute(0, 2, 3, 1)[pos].to(pred.dtype)
                if self.offset_loss == "l2":
                    err = (pred - target).pow(2).mean(-1)
                else:
                    err = F.huber_loss(pred, target, reduction="none", delta=1.0).mean(-1)
                reg = reg + err.sum()
            n_cells += logit.numel()
            n_pos += float(pos.sum())
        focal = focal / (n_cells if self.normalize == "cells" else max(n_pos, 1.0))
        reg = reg / max(n_pos, 1.0)
        return focal, reg
