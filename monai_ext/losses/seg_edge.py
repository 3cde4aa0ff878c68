# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""COIN's training loss on both heads: ``L = CE + Dice (segmentation) + CE + Dice (edge)``, ignore = 255.

Cross-entropy ignores pixels labelled ``ignore_index`` (the non-accepted predicted foreground). The Dice term
is the public code's "ForegroundDice": softmax channel 1 against the binary target, per sample, ``smooth = 1``,
with ignore pixels removed from both sums; it is ``1 - mean_b Dice_b``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ForegroundDiceLoss", "SegEdgeLoss"]


class ForegroundDiceLoss(nn.Module):
    """``1 - mean_b (2 sum p t + s) / (sum p + sum t + s)`` on softmax channel 1, ignore pixels excluded.

    Args:
        ignore_index: target value to exclude.
        smooth: additive smoothing ``s`` (COIN: 1).
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.reshape(target.shape[0], *logits.shape[2:]).long()
        valid = (t != self.ignore_index).to(logits.dtype)
        p = logits.float().softmax(1)[:, 1] * valid
        tf = (t == 1).to(p.dtype) * valid
        dims = tuple(range(1, p.ndim))
        inter = (p * tf).sum(dims)
        dice = (2 * inter + self.smooth) / (p.sum(dims) + tf.sum(dims) + self.smooth)
        return 1 - dice.mean()


class SegEdgeLoss(nn.Module):
    """Sum of CE (with ignore) and foreground Dice on the segmentation and the edge head.

    ``forward(pred, seg, edge)`` with ``pred`` the network's ``(B, 4, H, W)`` logits and ``seg`` / ``edge``
    ``(B, 1, H, W)`` or ``(B, H, W)`` targets in {0, 1, 255}; returns the total. :meth:`terms` gives the
    named terms of the last call (floats, for ``LossTermsLogger``).

    Args:
        ignore_index: ignored target value.
        seg_weight, edge_weight: weights of the two heads (COIN: 1, 1).
        dice_weight: weight of the Dice term relative to CE in both heads (COIN: 1).
        smooth: Dice smoothing.
    """

    def __init__(self, ignore_index: int = 255, seg_weight: float = 1.0, edge_weight: float = 1.0,
                 dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.seg_weight, self.edge_weight, self.dice_weight = float(seg_weight), float(edge_weight), float(dice_weight)
        self.dice = ForegroundDiceLoss(ignore_index, smooth)
        self._terms: dict[str, float] = {}

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.reshape(target.shape[0], *logits.shape[2:]).long()
        if not (t != self.ignore_index).any():  # a fully ignored batch contributes nothing (not NaN)
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), t, ignore_index=self.ignore_index)

    def forward(self, pred: torch.Tensor, seg: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        if pred.shape[1] != 4:
            raise ValueError(f"SegEdgeLoss expects (B, 4, H, W) logits (seg + edge heads), got {tuple(pred.shape)}")
        s_log, e_log = pred[:, :2], pred[:, 2:4]
        ce_s, dc_s = self._ce(s_log, seg), self.dice(s_log, seg)
        ce_e, dc_e = self._ce(e_log, edge), self.dice(e_log, edge)
        total = self.seg_weight * (ce_s + self.dice_weight * dc_s) + self.edge_weight * (ce_e + self.dice_weight * dc_e)
        self._terms = {"loss_seg_ce": float(ce_s.detach()), "loss_seg_dice": float(dc_s.detach()),
                       "loss_edge_ce": float(ce_e.detach()), "loss_edge_dice": float(dc_e.detach())}
        return total

    def terms(self) -> dict[str, float]:
        """Named terms of the last forward call."""
        return dict(self._terms)
