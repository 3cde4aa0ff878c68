# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Losses of the EM multi-task network: segmentation cross-entropy with an ignore label and the weighted MSE of
the centre heatmap (ignore zones = weight 0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IgnoreCrossEntropyLoss", "WeightedHeatmapLoss"]


class IgnoreCrossEntropyLoss(nn.Module):
    """Pixel cross-entropy of ``(B, C, H, W)`` logits against ``(B, [1,] H, W)`` class maps, skipping ``ignore_index``.

    A batch in which every pixel is ignored gives ``0`` (connected to the graph) instead of ``nan``, so a crop
    that falls entirely in an ignore zone is harmless.

    Args:
        ignore_index: class value excluded from the loss (255, CONVENTIONS.md).
        class_weights: optional per-class weights.
    """

    def __init__(self, ignore_index: int = 255, class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim:
            target = target[:, 0]
        target = target.long()
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index)


class WeightedHeatmapLoss(nn.Module):
    """Weighted mean squared error of a centre heatmap: ``sum(w (p - t)^2) / norm``.

    Args:
        reduction: ``"weight"`` (default): divide by ``sum(w)`` (the loss is the weighted mean over supervised
            pixels, independent of how much of the crop is ignored); ``"mean"``: divide by the pixel count
            (the paper's code: ``mean(w * (p - t)^2)``).
    """

    def __init__(self, reduction: str = "weight") -> None:
        super().__init__()
        if reduction not in ("weight", "mean"):
            raise ValueError(f"reduction must be 'weight' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        pred = pred.float()
        target = target.float().reshape(pred.shape)
        err = (pred - target) ** 2
        if weight is None:
            return err.mean()
        weight = weight.float().reshape(pred.shape)
        total = (weight * err).sum()
        if self.reduction == "mean":
            return total / pred.numel()
        norm = weight.sum()
        if float(norm) <= 0:
            return pred.sum() * 0.0
        return total / norm
