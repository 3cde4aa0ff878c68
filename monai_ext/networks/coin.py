# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""COIN's student: one encoder, a segmentation decoder and an edge decoder (supplement B.7).

``forward(image)`` returns ``(B, 4, H, W)`` logits at the input size: channels 0-1 = segmentation
(background, nucleus), 2-3 = edge (no edge, edge). One tensor keeps the network TorchScript-able and usable by
MONAI's inferers, ``ckpt_export`` and MONAI Label; :class:`~monai_ext.transforms.coin.COINInstancesd` turns it
into instances.

- :class:`COINUNet` (default, CPU-friendly): MONAI ``BasicUNet`` blocks, shared encoder, two decoders.
  Inputs of any size (padded internally to a multiple of 16). ``torch.jit.script``-able.
- :class:`COINDeepLabV3Plus` (the paper's architecture): DeepLabv3+ (ASPP with dilations 12/24/36 at output
  stride 8) on a timm ResNet (``resnet101`` in the paper; ``features_only``, no download: pass
  ``backbone_checkpoint`` for ImageNet weights), with two DeepLabv3+ heads. Heavy on CPU; ``torch.jit.trace``-able.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

from monai_ext.networks.blocks import fast_deconvs, fast_inference_layers

__all__ = ["COINUNet", "COINDeepLabV3Plus", "split_outputs"]


def split_outputs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 4, H, W)`` -> segmentation logits ``(B, 2, H, W)`` and edge logits ``(B, 2, H, W)``."""
    return out[:, :2], out[:, 2:4]


class _Decoder(nn.Module):
    """BasicUNet decoder; ``is_pad=False``: inputs are padded to a multiple of 16, so skip shapes always match and
    UpCat's no-op replicate pad (a full copy of every upsampled map) is skipped."""

    def __init__(self, fea: Sequence[int], out_channels: int, act: str | tuple, norm: str | tuple, dropout: float,
                 upsample: str) -> None:
        super().__init__()
        self.upcat_4 = UpCat(2, fea[4], fea[3], fea[3], act, norm, True, dropout, upsample, is_pad=False)
        self.upcat_3 = UpCat(2, fea[3], fea[2], fea[2], act, norm, True, dropout, upsample, is_pad=False)
        self.upcat_2 = UpCat(2, fea[2], fea[1], fea[1], act, norm, True, dropout, upsample, is_pad=False)
        self.upcat_1 = UpCat(2, fea[1], fea[0], fea[5], act, norm, True, dropout, upsample, halves=False,
                             is_pad=False)
        self.final_conv = nn.Conv2d(fea[5], out_channels, kernel_size=1)

    def forward(
        self, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor
    ) -> torch.Tensor:
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return self.final_conv(u1)


class COINUNet(nn.Module):
    """U-Net encoder shared by a segmentation decoder and an edge decoder; output ``(B, 4, H, W)`` logits.

    Args:
        in_channels: image channels (3 for RGB H&E).
        features: six channel counts as in MONAI ``BasicUNet`` (encoder levels 0-4, last decoder level).
        seg_classes, edge_classes: classes of the two heads (2 each in COIN).
        act, norm, dropout, upsample: ``BasicUNet`` options.
    """

    def __init__(
        self,
        in_channels: int = 3,
        features: Sequence[int] = (16, 32, 64, 128, 256, 16),
        seg_classes: int = 2,
        edge_classes: int = 2,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        fea = list(features)
        if len(fea) != 6:
            raise ValueError(f"features must have 6 entries, got {fea}")
        self.conv_0 = TwoConv(2, in_channels, fea[0], act, norm, True, dropout)
        self.down_1 = Down(2, fea[0], fea[1], act, norm, True, dropout)
        self.down_2 = Down(2, fea[1], fea[2], act, norm, True, dropout)
        self.down_3 = Down(2, fea[2], fea[3], act, norm, True, dropout)
        self.down_4 = Down(2, fea[3], fea[4], act, norm, True, dropout)
        self.seg_decoder = _Decoder(fea, seg_classes, act, norm, dropout, upsample)
        self.edge_decoder = _Decoder(fea, edge_classes, act, norm, dropout, upsample)
        self.multiple = 16
        fast_deconvs(self)  # the decoders' 2x2 up-convolutions as 1x1 conv + pixel shuffle (same weights, faster)
        fast_inference_layers(self)  # CPU inference: instance norms and max-pools by faster kernels, same outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        if ph > 0 or pw > 0:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        seg = self.seg_decoder(x0, x1, x2, x3, x4)
        edge = self.edge_decoder(x0, x1, x2, x3, x4)
        return torch.cat([seg, edge], 1)[:, :, :h, :w]


class _ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: Sequence[int]) -> None:
        super().__init__()
        branches = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))]
        for r in rates:
            branches.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False),
                                          nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(inplace=True), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, 1))


class _DeepLabHead(nn.Module):
    """DeepLabv3+ decoder: ASPP on the deep features + 48-channel low-level projection + two 3x3 convs."""

    def __init__(self, deep: int, low: int, classes: int, rates: Sequence[int], width: int = 256) -> None:
        super().__init__()
        self.aspp = _ASPP(deep, width, rates)
        self.low = nn.Sequential(nn.Conv2d(low, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(width + 48, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, classes, 1))

    def forward(self, low: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        a = F.interpolate(self.aspp(deep), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([a, self.low(low)], 1))


class COINDeepLabV3Plus(nn.Module):
    """The paper's student: DeepLabv3+ on a timm ResNet (output stride 8) with a seg and an edge head.

    Args:
        encoder: timm ResNet name (paper: ``resnet101``; ``resnet18`` / ``resnet50`` for less compute).
        backbone_checkpoint: optional weights file for the encoder (never downloaded).
        in_channels: image channels.
        rates: ASPP dilation rates (paper: 12, 24, 36 at output stride 8).
        width: decoder channels.
    """

    def __init__(
        self,
        encoder: str = "resnet101",
        backbone_checkpoint: str | None = None,
        in_channels: int = 3,
        rates: Sequence[int] = (12, 24, 36),
        width: int = 256,
        seg_classes: int = 2,
        edge_classes: int = 2,
    ) -> None:
        super().__init__()
        import timm

        self.encoder = timm.create_model(encoder, pretrained=False, features_only=True, out_indices=(1, 4),
                                         output_stride=8, in_chans=in_channels)
        if backbone_checkpoint:
            timm.models.load_checkpoint(self.encoder, backbone_checkpoint, strict=False)
        low, deep = self.encoder.feature_info.channels()
        self.seg_head = _DeepLabHead(deep, low, seg_classes, rates, width)
        self.edge_head = _DeepLabHead(deep, low, edge_classes, rates, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        feats = self.encoder(x)
        low, deep = feats[0], feats[1]
        seg = F.interpolate(self.seg_head(low, deep), size=(h, w), mode="bilinear", align_corners=False)
        edge = F.interpolate(self.edge_head(low, deep), size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([seg, edge], 1)
