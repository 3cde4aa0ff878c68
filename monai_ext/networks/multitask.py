# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Multi-task U-Net of the EM weakly supervised domain adaptation method (arXiv 2510.16450).

One shared encoder-decoder trunk feeds three heads, as in the authors' public code (``CoDA_Net``):

- **segmentation**: 2-class logits (background, mitochondrion), trained with cross-entropy (ignore label 255);
- **centre detection**: a non-negative (ReLU) Gaussian-heatmap regression, peak ``1.0`` at instance centres;
- **projection**: an ``L``-dimensional embedding (1x1 conv, InstanceNorm, ReLU, 1x1 conv) taken from a coarser
  decoder level (1/4 resolution in the paper), used only by the class-focused contrastive loss.

``forward(image)`` returns one tensor ``(B, 3, H, W)`` = seg logits (2) + heatmap (1) at the input size, so that
MONAI inferers, ``verify_net_in_out``, ``ckpt_export`` (TorchScript) and MONAI Label work.
``forward(image, True)`` appends the projection, upsampled to the input size by nearest neighbour, as channels
``3:3 + L`` (training only; ``out[..., ::proj_stride, ::proj_stride]`` recovers the projection's own grid, where the
contrastive loss is computed). Inputs of any size are padded internally to a multiple of ``2 ** (levels - 1)``.

Deviation from the paper (documented in the bundle README): a plain U-Net trunk (MONAI ``BasicUNet`` blocks,
InstanceNorm by default like the paper) with configurable widths; the paper's trunk (space-to-depth stem, 72-576
channels, multi-branch 1x3/3x1 blocks with an SE gate) is replaced because its blocks are not public in a reusable
form and it is far too heavy for CPU training. ``channels=(72, 144, 288, 576)`` gives the paper's widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

from monai_ext.networks.blocks import fast_inference_layers

__all__ = ["MultiTaskUNet", "split_outputs", "NUM_OUTPUTS"]

#: channels of the inference output: seg logits (background, mitochondrion) + centre heatmap.
NUM_OUTPUTS = 3


def split_outputs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Split a network output into seg logits ``(B, 2, ...)``, heatmap ``(B, 1, ...)`` and projection (or ``None``)."""
    proj = out[:, NUM_OUTPUTS:] if out.shape[1] > NUM_OUTPUTS else None
    return out[:, :2], out[:, 2:3], proj


class MultiTaskUNet(nn.Module):
    """Shared encoder-decoder with segmentation, centre-heatmap and projection heads (2D).

    Args:
        in_channels: image channels (1 for EM).
        channels: encoder widths, one per level (``len >= 2``); the decoder mirrors them.
        seg_classes: segmentation classes (2: background, mitochondrion).
        proj_dim: projection dimension (paper: 128).
        proj_level: decoder level of the projection head (0 = full resolution, 2 = 1/4 as in the paper);
            clamped to the number of levels.
        norm: ``"instance"`` (paper) or ``"batch"``.
        dropout: dropout of the conv blocks.
        upsample: ``"deconv"``, ``"nontrainable"`` or ``"pixelshuffle"`` (MONAI ``UpCat``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        seg_classes: int = 2,
        proj_dim: int = 64,
        proj_level: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        if len(ch) < 2 or min(ch) < 1:
            raise ValueError(f"channels needs >= 2 positive widths, got {channels}")
        if seg_classes != 2:
            raise ValueError("the EM multi-task network has exactly 2 segmentation classes (background, mitochondrion)")
        norm_arg: tuple = ("instance", {"affine": True}) if norm == "instance" else ("batch", {"affine": True})
        if norm not in ("instance", "batch"):
            raise ValueError(f"norm must be 'instance' or 'batch', got {norm!r}")
        act = ("relu", {"inplace": True})
        self.levels = len(ch)
        self.multiple = 2 ** (self.levels - 1)
        self.proj_dim = int(proj_dim)
        self.proj_level = max(0, min(int(proj_level), self.levels - 1))
        self.proj_stride = 2 ** self.proj_level
        self.stem = TwoConv(2, in_channels, ch[0], act, norm_arg, True, dropout)
        self.downs = nn.ModuleList([Down(2, ch[i], ch[i + 1], act, norm_arg, True, dropout) for i in range(self.levels - 1)])
        # decoder: from the deepest level back to level 0; ups[k] produces level (levels - 2 - k)
        self.ups = nn.ModuleList([
            # is_pad=False: inputs are padded to a multiple of 2 ** (levels - 1), so skip shapes always match and
            # UpCat's no-op replicate pad (a full copy of every upsampled map) is skipped
            UpCat(2, ch[i + 1], ch[i], ch[i], act, norm_arg, True, dropout, upsample, is_pad=False)
            for i in range(self.levels - 2, -1, -1)
        ])
        self.seg_head = nn.Conv2d(ch[0], seg_classes, kernel_size=1)
        self.det_head = nn.Sequential(nn.Conv2d(ch[0], ch[0], 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch[0], 1, 1))
        pc = ch[self.proj_level]
        self.proj_head = nn.Sequential(
            nn.Conv2d(pc, pc, 1), nn.InstanceNorm2d(pc, affine=True), nn.ReLU(inplace=True), nn.Conv2d(pc, self.proj_dim, 1)
        )
        fast_inference_layers(self)  # CPU inference: instance norms and 2x2 max-pools by faster kernels, same outputs

    def forward(self, x: torch.Tensor, with_projection: bool = False) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 3, H, W)`` (seg logits, heatmap) or ``(B, 3 + proj_dim, H, W)``."""
        h, w = x.shape[-2], x.shape[-1]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        if ph > 0 or pw > 0:
            x = F.pad(x, [0, pw, 0, ph], mode="replicate")
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        y = feats[-1]
        proj_in = y
        level = self.levels - 1
        if level == self.proj_level:
            proj_in = y
        for up in self.ups:
            level -= 1
            y = up(y, feats[level])
            if level == self.proj_level:
                proj_in = y
        seg = self.seg_head(y)
        det = torch.relu(self.det_head(y))
        out = torch.cat([seg, det], 1)
        if with_projection:
            proj = self.proj_head(proj_in)
            if proj.shape[-2:] != out.shape[-2:]:
                # nearest: pixel (s*i, s*j) holds cell (i, j) exactly, so losses can subsample at ``proj_stride``
                proj = F.interpolate(proj, size=[out.shape[-2], out.shape[-1]], mode="nearest")
            out = torch.cat([out, proj], 1)
        return out[..., :h, :w]
