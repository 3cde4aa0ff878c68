# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Pixel-embedding U-Net (SPOCO, Wolny et al. CVPR 2022) and its exponential-moving-average teacher.

:class:`EmbeddingUNet` is the plain U-Net of the SPOCO code: ``features=(16, 32, 64, 128, 256, 512)`` (the default
here is one level shallower for CPU training; pass the paper's list for GPUs), double convolutions in ``bcr`` order
(BatchNorm -> Conv -> ReLU), max-pool 2, nearest upsampling + concatenated skip connection in the decoder, and a
final 1x1 convolution giving ``embedding_dim`` raw (un-normalised) channels. Inputs of any size are padded to a
multiple of the total down-sampling factor and the output is cropped back, so the output always has the input's
spatial shape. The module is TorchScript-scriptable (``torch.jit.script``) for ``ckpt_export``.

:class:`EMATeacher` holds the teacher ``g`` of SPOCO: a frozen copy of the student ``f`` updated as
``g = m g + (1 - m) f`` with ``m = 0.999``. SPOCO updates ``g`` at the start of every forward pass, before ``g``'s
own pass; :class:`~monai_ext.engines.spoco.SpocoTrainer` calls :meth:`EMATeacher.update` right after each optimizer
step instead, which gives the teacher exactly the same weights at every teacher pass (the first SPOCO update is a
no-op because ``g == f``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_ext.networks.blocks import fast_inference_layers

__all__ = ["EmbeddingUNet", "EMATeacher", "DEFAULT_FEATURES", "PAPER_FEATURES"]

#: CPU-friendly default feature maps (5 levels).
DEFAULT_FEATURES: tuple[int, ...] = (16, 32, 64, 128, 256)
#: feature maps of the SPOCO code (6 levels).
PAPER_FEATURES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)


def _norm(kind: str, spatial_dims: int, channels: int, num_groups: int) -> nn.Module:
    if kind == "b":
        return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)
    groups = num_groups if channels % num_groups == 0 and channels >= num_groups else 1
    return nn.GroupNorm(groups, channels)


def _single_conv(in_ch: int, out_ch: int, spatial_dims: int, order: str, num_groups: int) -> nn.Sequential:
    """One convolution with normalisation and ReLU in ``order`` (e.g. ``"bcr"``, ``"cbr"``, ``"gcr"``, ``"cr"``)."""
    layers: list[nn.Module] = []
    conv_at = order.index("c")
    has_norm = "b" in order or "g" in order
    for i, ch in enumerate(order):
        if ch == "c":
            conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
            layers.append(conv(in_ch, out_ch, 3, padding=1, bias=not has_norm))
        elif ch in "bg":
            layers.append(_norm(ch, spatial_dims, in_ch if i < conv_at else out_ch, num_groups))
        elif ch == "r":
            layers.append(nn.ReLU(inplace=True))
        else:
            raise ValueError(f"layer_order: unknown layer {ch!r} in {order!r}; use b (BatchNorm), g (GroupNorm), c, r")
    return nn.Sequential(*layers)


def _double_conv(in_ch: int, out_ch: int, spatial_dims: int, order: str, num_groups: int, encoder: bool) -> nn.Sequential:
    """Two convolutions; in the encoder the first one goes to ``max(out/2, in)`` channels as in the SPOCO code."""
    mid = max(out_ch // 2, in_ch) if encoder else out_ch
    return nn.Sequential(
        _single_conv(in_ch, mid, spatial_dims, order, num_groups),
        _single_conv(mid, out_ch, spatial_dims, order, num_groups),
    )


class _Decoder(nn.Module):
    """Nearest upsampling to the skip's size, concatenation with the skip, double convolution."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, spatial_dims: int, order: str, num_groups: int) -> None:
        super().__init__()
        self.conv = _double_conv(in_ch + skip_ch, out_ch, spatial_dims, order, num_groups, encoder=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
        return self.conv(torch.cat([skip, x], dim=1))


class EmbeddingUNet(nn.Module):
    """U-Net predicting ``embedding_dim``-dimensional pixel embeddings, 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 for RGB CVPPP, 1 for EM).
        embedding_dim: embedding dimension ``E`` (SPOCO: 16 for CVPPP, 8 for Cityscapes).
        features: feature maps per level (at least 2 levels).
        layer_order: order of normalisation / conv / ReLU in each convolution: ``"bcr"`` (SPOCO default),
            ``"cbr"``, ``"gcr"`` (GroupNorm, for batch size 1), ``"cr"`` (no normalisation).
        num_groups: GroupNorm groups (``g`` orders only).
        pool_size: max-pool kernel per level; ``(1, 2, 2)`` keeps the z resolution of anisotropic EM volumes.

    Input ``(B, in_channels, *spatial)``; output ``(B, embedding_dim, *spatial)`` (same spatial shape, any size).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        embedding_dim: int = 16,
        features: Sequence[int] = DEFAULT_FEATURES,
        layer_order: str = "bcr",
        num_groups: int = 8,
        pool_size: int | Sequence[int] = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        features = [int(f) for f in features]
        if len(features) < 2:
            raise ValueError(f"features: need at least 2 levels, got {features}")
        if embedding_dim < 1 or in_channels < 1:
            raise ValueError(f"embedding_dim and in_channels must be >= 1, got {embedding_dim}, {in_channels}")
        if "c" not in layer_order:
            raise ValueError(f"layer_order must contain a convolution 'c', got {layer_order!r}")
        pool = [int(pool_size)] * spatial_dims if isinstance(pool_size, int) else [int(p) for p in pool_size]
        if len(pool) != spatial_dims or min(pool) < 1:
            raise ValueError(f"pool_size must be an int or {spatial_dims} ints >= 1, got {pool_size}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        levels = len(features)
        # total down-sampling factor per axis; inputs are padded to a multiple of it
        self.multiple = [int(p ** (levels - 1)) for p in pool]
        self.encoders = nn.ModuleList()
        prev = in_channels
        for i, f in enumerate(features):
            down: nn.Module = nn.Identity()
            if i > 0:
                down = nn.MaxPool2d(pool) if spatial_dims == 2 else nn.MaxPool3d(pool)
            self.encoders.append(nn.Sequential(down, _double_conv(prev, f, spatial_dims, layer_order, num_groups,
                                                                   encoder=True)))
            prev = f
        self.decoders = nn.ModuleList()
        for i in range(levels - 2, -1, -1):
            self.decoders.append(_Decoder(prev, features[i], features[i], spatial_dims, layer_order, num_groups))
            prev = features[i]
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.final_conv = conv(features[0], embedding_dim, 1)
        fast_inference_layers(self)  # CPU inference: 2D max-pools without arg-max indices, same outputs

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        spatial = x.shape[2:]
        pads: list[int] = []
        size: list[int] = []
        for d in range(len(self.multiple) - 1, -1, -1):  # F.pad takes the last axis first
            m = self.multiple[d]
            n = int(spatial[d])
            extra = (m - n % m) % m
            pads.append(extra // 2)
            pads.append(extra - extra // 2)
        for d in range(len(self.multiple)):
            size.append(int(spatial[d]))
        if sum(pads) > 0:
            x = F.pad(x, pads, mode="replicate")
        return x, pads + size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError("EmbeddingUNet: expected a (B, C, *spatial) tensor with " + str(self.spatial_dims)
                             + " spatial axes, got " + str(x.dim() - 2))
        x, geom = self._pad(x)
        skips: list[torch.Tensor] = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        n = len(skips)
        for j, dec in enumerate(self.decoders):
            x = dec(x, skips[n - 2 - j])
        x = self.final_conv(x)
        nd = self.spatial_dims
        pads = geom[: 2 * nd]
        size = geom[2 * nd:]
        if sum(pads) > 0:
            if nd == 2:
                x = x[:, :, pads[2]: pads[2] + size[0], pads[0]: pads[0] + size[1]]
            else:
                x = x[:, :, pads[4]: pads[4] + size[0], pads[2]: pads[2] + size[1], pads[0]: pads[0] + size[2]]
        return x


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


class EMATeacher(nn.Module):
    """Frozen exponential-moving-average copy ``g`` of a student network ``f`` (SPOCO, mean teacher).

    ``update(student)`` sets every parameter ``g = m g + (1 - m) f`` and copies the buffers (BatchNorm running
    statistics) when ``copy_buffers`` (SPOCO leaves them to the teacher's own forward passes; both are
    offered). With ``warmup=True`` the momentum used at update ``t`` is ``min(m, (1 + t) / (10 + t))`` (the mean
    teacher ramp of Tarvainen & Valpola 2017), so that in short runs the teacher is not stuck near the random
    initialisation; ``warmup=False`` is the paper's constant momentum.

    Args:
        student: the network ``f`` (a DDP wrapper is unwrapped).
        momentum: ``m`` (SPOCO: 0.999).
        warmup: ramp the momentum up from 0.
        copy_buffers: copy the student's buffers at each update.

    The teacher is in the state dict (``teacher.*`` plus the update counter ``num_updates``), so putting this
    module in a checkpoint's ``save_dict`` resumes it exactly. ``forward(x)`` runs the teacher without gradients.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999, warmup: bool = False,
                 copy_buffers: bool = False) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.warmup = bool(warmup)
        self.copy_buffers = bool(copy_buffers)
        self.teacher = copy.deepcopy(_unwrap(student))
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_momentum(self) -> float:
        """Momentum of the next update."""
        if not self.warmup:
            return self.momentum
        t = float(self.num_updates.item())
        return min(self.momentum, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step towards ``student``'s current weights."""
        m = self.current_momentum()
        student = _unwrap(student)
        s_params = list(student.parameters())
        t_params = list(self.teacher.parameters())
        if len(s_params) != len(t_params):
            raise ValueError("EMATeacher.update: the student does not have the teacher's architecture")
        t_float = [t for t in t_params if t.dtype.is_floating_point]
        s_float = [s.detach().to(t.device) for s, t in zip(s_params, t_params) if t.dtype.is_floating_point]
        if t_float:
            torch._foreach_mul_(t_float, m)
            torch._foreach_add_(t_float, s_float, alpha=1.0 - m)
        if self.copy_buffers:
            for bs, bt in zip(student.buffers(), self.teacher.buffers()):
                bt.copy_(bs)
        self.num_updates += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x)
