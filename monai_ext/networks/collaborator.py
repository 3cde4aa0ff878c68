# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""CKS collaborator (Yu 2023, Sec. III-B): a deliberately weak pixel-level model, discarded after training.

Two nets without shared weights, on the same image:

- foreground ``M_c``: a small U-Net with (16, 32, 64) channels at three scales (two down-samplings); every level is
  2 x [3x3 conv, GroupNorm without affine scale, ReLU]; bilinear up-sampling + concatenation;
- cell border ``B_c``: a three-layer CNN with 32 channels: 2 x [3x3 conv, instance norm without affine, ReLU] then
  a 3x3 output conv.

The released LACSS 0.4.x swaps the two channel specs (the U-Net gets (32, 32), the CNN (16, 32, 64)); that bug is
*not* reproduced here. Its per-row GroupNorm quirk (flax normalising an unbatched ``[H, W, C]`` tensor per row) is not
reproduced either: normalisation is per sample. The paper's Table VII variants are reachable through
``fg_channels`` (a2/a3: deeper U-Nets) and ``border_channels``.

``num_classes > 1`` (released code only, one channel per LIVECell cell line selected by the image's class) is
available; the default 1 is the paper's single-channel collaborator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ForegroundUNet", "BorderCNN", "Collaborator"]


def _block(cin: int, cout: int, n: int = 2, norm: str = "group") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1))
        if norm == "group":
            g = min(8, cout)
            while cout % g:
                g -= 1
            layers.append(nn.GroupNorm(g, cout, affine=False))
        else:
            layers.append(nn.InstanceNorm2d(cout, affine=False))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ForegroundUNet(nn.Module):
    """Shallow U-Net for the whole-image foreground logit ``M_c`` (paper net a1 with the default channels).

    Args:
        in_channels: image channels.
        channels: widths per scale, finest first ((16, 32, 64): two down-samplings).
        out_channels: logit channels (``num_classes`` of :class:`Collaborator`).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64), out_channels: int = 1) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        if len(ch) < 1:
            raise ValueError("channels must list at least one width")
        self.down = nn.ModuleList([_block(in_channels if i == 0 else ch[i - 1], c) for i, c in enumerate(ch)])
        self.up = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1))])
        self.head = nn.Conv2d(ch[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, blk in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = blk(x)
            skips.append(x)
        n = len(skips)
        for j, blk in enumerate(self.up):
            skip = skips[n - 2 - j]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, skip], 1))
        return self.head(x)


class BorderCNN(nn.Module):
    """Plain CNN for the cell-border logit ``B_c``: ``len(channels)`` conv blocks + a 3x3 output conv (net b1)."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 32), out_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for c in channels:
            layers.append(_block(cin, int(c), n=1, norm="instance"))
            cin = int(c)
        layers.append(nn.Conv2d(cin, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Collaborator(nn.Module):
    """The CKS collaborator: ``forward(image, cls) -> (fg_logit, border_logit)``, each ``(B, 1, H, W)``.

    Args:
        in_channels: image channels.
        fg_channels: U-Net widths (paper a1: (16, 32, 64)).
        border_channels: border CNN hidden widths (paper b1: three conv layers of 32 channels = (32, 32) + output).
        num_classes: output channels; with > 1 the channel of each image's class is selected (released-code option).
    """

    def __init__(self, in_channels: int = 1, fg_channels: Sequence[int] = (16, 32, 64),
                 border_channels: Sequence[int] = (32, 32), num_classes: int = 1) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.foreground = ForegroundUNet(in_channels, fg_channels, self.num_classes)
        self.border = BorderCNN(in_channels, border_channels, self.num_classes)

    def forward(self, image: torch.Tensor, cls: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fg = self.foreground(image)
        edge = self.border(image)
        if self.num_classes > 1:
            if cls is None:
                raise ValueError("a Collaborator with num_classes > 1 needs the class index of every image")
            idx = cls.long().clamp(0, self.num_classes - 1).view(-1, 1, 1, 1).expand(-1, 1, *fg.shape[-2:])
            fg = fg.gather(1, idx)
            edge = edge.gather(1, idx)
        return fg, edge
