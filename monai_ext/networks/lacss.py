# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""LACSS principal model of CKS (Yu 2023): ConvNeXt + FPN, a shared multi-scale point detector and a segmentation
head that predicts one mask per detected cell inside a fixed window around it.

Architecture (paper Sec. III-A, Fig. 1 and 3)::

    image -> ConvNeXt (timm, stride 4..32) -> FPN (C channels, no extra levels)
          -> LocationHead on every level (shared weights): score D (sigmoid logit) + offset D_s (2 ch, grid units)
             decode: position = ((grid + 0.5) + offset) * stride - 0.5; distance NMS at inference
          -> SegmentationHead on the stride-4 level: for every cell location, a (S/4)^2 patch of features
             [gathered in one batched index op] + a learned location encoding (MLP of the FPN feature at the cell,
             reshaped 4x8x8, resized to the patch) -> 1x1 conv -> ReLU -> 2x2 transposed conv -> bilinear x2
             = logits of the cell's mask m_i on an S x S window (S = ``crop_size``, 96 px default)

``LacssNet.forward(image, locations, valid)`` returns the raw outputs used by the losses; ``LacssNet.predict(image)``
(TorchScript-exported) returns a dense ``(B, 2, H, W)`` map: instance ids (1..n by decreasing score) and the score of
the cell owning each pixel. :class:`LacssInference` is the same network with ``forward = predict``: it is the bundle's
inference ``network_def`` (same ``state_dict``), exportable with ``torch.jit.script``.

Configurable deviations (defaults follow the paper):

- ``detection_strides``: paper (4, 8, 16, 32); the released code (16, 8, 4).
- ``encoding_merge``: paper ``"concat"`` (features ++ encoding -> 1x1 conv); code ``"add"`` (ReLU(features + 1x1
  conv(encoding))). Both are equally expressive.
- ``proposal_swap_distance``: code-only training trick (replace a ground-truth point by the best-matching detection
  within that distance before segmenting); 0 (off) by default as in the paper.
- ``backbone``: the paper uses ``convnext_small``; the default here is ``convnext_atto`` (CPU-sized).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ext.networks.blocks import fast_convnext_blocks
from monai_ext.postprocess.points import crop_flat_index, distance_nms, paint_instances

__all__ = [
    "ConvNeXtEncoder",
    "FPN",
    "LocationHead",
    "SegmentationHead",
    "LacssNet",
    "LacssInference",
    "LacssPredictor",
    "as_predictor",
]

logger = logging.getLogger(__name__)

#: floats of per-cell features (cells x patch^2 x channels) per inference chunk on a CPU: 1.2 M = 4.7 MB, which
#: keeps the gather / add / ReLU / linear chain of :class:`SegmentationHead` in cache (32 cells at the defaults).
CPU_CHUNK_ELEMENTS = 32 * 24 * 24 * 64


def _gn(channels: int, groups: int = 32) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class ConvNeXtEncoder(nn.Module):
    """A timm ConvNeXt returning the stride 4, 8, 16, 32 feature maps; never downloads weights.

    Args:
        name: timm model name (``convnext_atto`` ... ``convnext_small`` (paper) ...).
        in_channels: image channels.
        drop_path_rate: stochastic depth rate (paper config: 0.4 for convnext_small).
        checkpoint: optional local file with ImageNet-style weights of ``name`` (timm adapts the first conv to
            ``in_channels``); ``None``: random (He/trunc-normal) initialisation, the paper's CKS-1 setting.
    """

    def __init__(self, name: str = "convnext_atto", in_channels: int = 1, drop_path_rate: float = 0.1,
                 checkpoint: str | None = None) -> None:
        super().__init__()
        import timm

        kwargs: dict[str, Any] = {"features_only": True, "in_chans": in_channels, "drop_path_rate": drop_path_rate}
        if checkpoint:
            kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
            self.body = timm.create_model(name, pretrained=True, **kwargs)
            logger.info("loaded backbone weights from %s", checkpoint)
        else:
            self.body = timm.create_model(name, pretrained=False, **kwargs)
        fast_convnext_blocks(self.body)  # CPU inference: cache-blocked block MLPs, same weights and outputs
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


class FPN(nn.Module):
    """Feature pyramid: 1x1 lateral convs + ReLU; top-down nearest upsampling, add, 3x3 conv + ReLU (no extra levels)."""

    def __init__(self, in_channels: list[int], channels: int = 128) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in in_channels])
        self.smooth = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels[:-1]])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat: list[torch.Tensor] = []
        for i, conv in enumerate(self.lateral):
            lat.append(F.relu(conv(feats[i])))
        n = len(lat)
        outs: list[torch.Tensor] = [lat[n - 1]]
        top = lat[n - 1]
        # top-down: smooth[i] belongs to level n - 2 - i (coarse to fine, so the ModuleList is iterated in order)
        for i, conv in enumerate(self.smooth):
            k = n - 2 - i
            up = F.interpolate(top, size=lat[k].shape[-2:], mode="nearest")
            top = F.relu(conv(up + lat[k]))
            outs.insert(0, top)
        return outs


class LocationHead(nn.Module):
    """Point detector shared by all pyramid levels: n x [3x3 conv (no bias), per-channel GroupNorm, ReLU] then
    1x1 convs to a score logit and a 2-channel (dy, dx) offset in grid units."""

    def __init__(self, channels: int = 128, n_convs: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(channels, channels),
                       nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.score = nn.Conv2d(channels, 1, 1)
        self.offset = nn.Conv2d(channels, 2, 1)
        nn.init.constant_(self.score.bias, -4.59512)  # RetinaNet prior p = 0.01: stable focal-loss start

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.score(h), self.offset(h)


class SegmentationHead(nn.Module):
    """Per-cell mask prediction on a fixed window around each location, batched over all cells.

    Args:
        in_channels: FPN channels (stride-4 level).
        channels: per-cell feature channels (64 in LACSS).
        n_convs: 3x3 conv + GN + ReLU blocks before the final 3x3 conv to ``channels``.
        crop_size: window side in image pixels (multiple of 8; 96 in the paper).
        encoder_dims: hidden sizes of the location-encoding MLP.
        encoding_shape: (channels, height, width) of the MLP output before resizing to the patch.
        merge: ``"concat"`` (paper) or ``"add"`` (released code).
    """

    def __init__(self, in_channels: int = 128, channels: int = 64, n_convs: int = 3, crop_size: int = 96,
                 encoder_dims: tuple[int, int] = (256, 256), encoding_shape: tuple[int, int, int] = (4, 8, 8),
                 merge: str = "concat") -> None:
        super().__init__()
        if crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8, got {crop_size}")
        if merge not in ("concat", "add"):
            raise ValueError(f"merge must be 'concat' or 'add', got {merge!r}")
        self.crop_size = int(crop_size)
        self.patch = self.crop_size // 4
        self.merge = merge
        self.enc_shape = [int(s) for s in encoding_shape]
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += [nn.Conv2d(in_channels, in_channels, 3, padding=1), _gn(in_channels), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(in_channels, channels, 3, padding=1))
        self.features = nn.Sequential(*layers)
        n_enc = self.enc_shape[0] * self.enc_shape[1] * self.enc_shape[2]
        self.encoder = nn.Sequential(
            nn.Linear(in_channels, encoder_dims[0]), nn.ReLU(inplace=True),
            nn.Linear(encoder_dims[0], encoder_dims[1]), nn.ReLU(inplace=True),
            nn.Linear(encoder_dims[1], n_enc),
        )
        # The 1x1 fusion conv of [features ++ encoding] is split into its two linear parts, applied *before* the
        # per-cell gather (features: once per image) and on the 4-channel encoding: identical result, far fewer
        # operations than convolving every cell window. The 2x2 stride-2 transposed conv to one channel is a
        # per-pixel linear map to 4 sub-pixels (``out``), applied channels-last.
        self.fuse_feat = nn.Conv2d(channels, channels, 1) if merge == "concat" else nn.Identity()
        self.fuse_enc = nn.Linear(self.enc_shape[0], channels, bias=merge == "add")
        self.out = nn.Linear(channels, 4)

    def feature_map(self, fpn4: torch.Tensor) -> torch.Tensor:
        """Per-image stride-4 segmentation features (computed once per image, shared by all its cells)."""
        return self.fuse_feat(self.features(fpn4))

    def forward(self, feat: torch.Tensor, fpn4: torch.Tensor, locations: torch.Tensor,
                batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits of the cells at ``locations`` ``(M, 2)`` of images ``batch`` ``(M,)``.

        Args:
            feat: ``(B, channels, h, w)`` from :meth:`feature_map`.
            fpn4: ``(B, C, h, w)`` stride-4 FPN features (input of the location encoding).

        Returns:
            ``(logits (M, S, S), origin (M, 2))`` with the window's top-left pixel ``origin``.
        """
        b, c, h, w = feat.shape
        p = self.patch
        m = locations.shape[0]
        cell = torch.floor(locations / 4.0).long()
        cell = torch.stack([cell[:, 0].clamp(0, h - 1), cell[:, 1].clamp(0, w - 1)], 1)
        origin_f = cell - p // 2
        flat, valid = crop_flat_index(origin_f, batch, p, h, w)
        table = feat.permute(0, 2, 3, 1).reshape(b * h * w, c)
        table = torch.cat([table, torch.zeros((1, c), dtype=table.dtype, device=table.device)], 0)
        flat = torch.where(valid, flat, torch.full_like(flat, b * h * w))  # out of image -> the zero row
        x = torch.index_select(table, 0, flat.reshape(-1))  # (M * p * p, c), one batched gather for all cells
        enc_in = self._bilinear(fpn4, locations, batch)
        enc = self.encoder(enc_in).view(-1, self.enc_shape[0], self.enc_shape[1], self.enc_shape[2])
        enc = F.interpolate(enc, size=(p, p), mode="bilinear", align_corners=False)
        enc = enc.permute(0, 2, 3, 1).reshape(m * p * p, self.enc_shape[0])
        # relu(patch + fuse_enc(enc)) in place on the gathered rows (autograd-safe: neither op needs its input
        # back). Both weights are passed in the layouts the CPU BLAS runs fastest (3-6x apart for these thin shapes).
        x.addmm_(enc, self.fuse_enc.weight.t().contiguous())
        if self.fuse_enc.bias is not None:
            x.add_(self.fuse_enc.bias)
        x.relu_()
        y = F.linear(x, self.out.weight, self.out.bias)
        y = y.view(m, p, p, 2, 2).permute(0, 1, 3, 2, 4).reshape(m, 1, 2 * p, 2 * p)
        y = F.interpolate(y, size=(self.crop_size, self.crop_size), mode="bilinear", align_corners=False)
        return y[:, 0], origin_f * 4

    @staticmethod
    def _bilinear(fmap: torch.Tensor, locations: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Bilinear sample of a stride-4 map at image-pixel locations: ``(M, C)``."""
        b, c, h, w = fmap.shape
        u = (locations + 0.5) / 4.0 - 0.5
        u0 = torch.floor(u)
        f = u - u0
        u0 = u0.long()
        table = fmap.permute(0, 2, 3, 1).reshape(b * h * w, c)
        out = torch.zeros((locations.shape[0], c), dtype=fmap.dtype, device=fmap.device)
        for dy in (0, 1):
            for dx in (0, 1):
                yy = (u0[:, 0] + dy).clamp(0, h - 1)
                xx = (u0[:, 1] + dx).clamp(0, w - 1)
                wy = f[:, 0] if dy == 1 else 1.0 - f[:, 0]
                wx = f[:, 1] if dx == 1 else 1.0 - f[:, 1]
                out = out + table[batch * h * w + yy * w + xx] * (wy * wx)[:, None].to(fmap.dtype)
        return out


class LacssNet(nn.Module):
    """The LACSS principal model (see the module docstring).

    Args:
        in_channels: image channels.
        backbone: timm ConvNeXt name.
        backbone_checkpoint: optional local backbone weights (no download ever happens).
        drop_path_rate: ConvNeXt stochastic depth.
        fpn_channels: FPN width C (paper code: 256 for convnext_small).
        detection_strides: pyramid levels the shared detector runs on.
        detection_convs: conv blocks of the detector.
        seg_channels, seg_convs, crop_size, encoding_merge: see :class:`SegmentationHead`.
        nms_distance: distance NMS radius in pixels (8).
        score_threshold: detections kept at inference (0.5, as LACSS ``predict_label``).
        mask_threshold: mask probability threshold (0.5).
        max_detections: per-image cap (3072, the paper's configuration handles thousands).
        min_area: painted cells with fewer pixels are removed.
        instance_chunk: cells processed per chunk at inference (bounds memory; no effect on results). ``0``
            (default): 512 cells on a GPU; on a CPU as many as keep a chunk's per-cell features within
            :data:`CPU_CHUNK_ELEMENTS` floats (32 cells at the defaults), so the per-cell tensors stay in cache
            (the per-cell part 1.8x faster than with 512 cells at 520 x 704, one thread).
        proposal_swap_distance: training-time GT -> matched detection swap distance (0: off, paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        backbone: str = "convnext_atto",
        backbone_checkpoint: str | None = None,
        drop_path_rate: float = 0.1,
        fpn_channels: int = 128,
        detection_strides: tuple[int, ...] | list[int] = (4, 8, 16, 32),
        detection_convs: int = 4,
        seg_channels: int = 64,
        seg_convs: int = 3,
        crop_size: int = 96,
        encoding_merge: str = "concat",
        nms_distance: float = 8.0,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        max_detections: int = 3072,
        min_area: int = 0,
        instance_chunk: int = 0,
        proposal_swap_distance: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.encoder = ConvNeXtEncoder(backbone, in_channels, drop_path_rate, backbone_checkpoint)
        if self.encoder.strides[0] != 4:
            raise ValueError(f"backbone {backbone} must have a stride-4 first feature level, got {self.encoder.strides}")
        self.fpn = FPN(self.encoder.channels, fpn_channels)
        self.feature_strides: list[int] = [int(s) for s in self.encoder.strides]
        det = [int(s) for s in detection_strides]
        unknown = [s for s in det if s not in self.feature_strides]
        if unknown or not det:
            raise ValueError(f"detection_strides {det} must be a non-empty subset of {self.feature_strides}")
        self.detection_strides: list[int] = det
        self.detection_levels: list[int] = [self.feature_strides.index(s) for s in det]
        self.detector = LocationHead(fpn_channels, detection_convs)
        self.segmentor = SegmentationHead(fpn_channels, seg_channels, seg_convs, crop_size, merge=encoding_merge)
        self.crop_size = int(crop_size)
        self.nms_distance = float(nms_distance)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_detections = int(max_detections)
        self.min_area = int(min_area)
        self.instance_chunk = int(instance_chunk)
        # automatic CPU chunk (``instance_chunk`` 0), fixed by the head's window and channels
        self.cpu_instance_chunk = max(1, CPU_CHUNK_ELEMENTS // (self.segmentor.patch ** 2 * int(seg_channels)))
        self.proposal_swap_distance = float(proposal_swap_distance)
        self.size_divisor = int(max(self.feature_strides))

    # ------------------------------------------------------------------------------------------------ shared parts
    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        ph = (self.size_divisor - h % self.size_divisor) % self.size_divisor
        pw = (self.size_divisor - w % self.size_divisor) % self.size_divisor
        if ph or pw:
            image = F.pad(image, [0, pw, 0, ph])
        return image

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.encoder(image))

    def _detect(self, fpn: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits: list[torch.Tensor] = []
        offsets: list[torch.Tensor] = []
        for i, f in enumerate(fpn):
            if i in self.detection_levels:
                s, o = self.detector(f)
                logits.append(s)
                offsets.append(o)
        return logits, offsets

    def _decode(self, logits: list[torch.Tensor], offsets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """All levels' detections: positions ``(B, L, 2)`` in pixels and scores ``(B, L)``."""
        pos: list[torch.Tensor] = []
        sco: list[torch.Tensor] = []
        for k in range(len(logits)):
            s = self.detection_strides[k]
            lg, off = logits[k], offsets[k]
            b, _, h, w = lg.shape
            gy = torch.arange(h, device=lg.device, dtype=off.dtype)
            gx = torch.arange(w, device=lg.device, dtype=off.dtype)
            cy = ((gy + 0.5) * s - 0.5)[:, None].expand(h, w)
            cx = ((gx + 0.5) * s - 0.5)[None, :].expand(h, w)
            py = cy[None] + off[:, 0] * s
            px = cx[None] + off[:, 1] * s
            pos.append(torch.stack([py, px], -1).reshape(b, h * w, 2))
            sco.append(torch.sigmoid(lg[:, 0]).reshape(b, h * w))
        return torch.cat(pos, 1), torch.cat(sco, 1)

    def _detections(self, pos: torch.Tensor, sco: torch.Tensor, height: int, width: int,
                    min_score: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """NMS per image: ``(locations (M, 2), scores (M,), batch (M,))``."""
        locs: list[torch.Tensor] = []
        scs: list[torch.Tensor] = []
        bts: list[torch.Tensor] = []
        for b in range(pos.shape[0]):
            p, s = pos[b], sco[b]
            inside = (p[:, 0] >= -0.5) & (p[:, 0] < height - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] < width - 0.5)
            s = torch.where(inside, s, torch.zeros_like(s))
            keep = distance_nms(p, s, self.nms_distance, self.max_detections, min_score)
            keep = keep[s[keep] > 0]
            locs.append(p[keep])
            scs.append(s[keep])
            bts.append(torch.full((keep.shape[0],), b, dtype=torch.long, device=pos.device))
        return torch.cat(locs, 0), torch.cat(scs, 0), torch.cat(bts, 0)

    # ------------------------------------------------------------------------------------------------ training API
    def forward(self, image: torch.Tensor, locations: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> dict[str, Any]:
        """Raw outputs for the losses.

        Args:
            image: ``(B, C, H, W)``.
            locations: ``(B, N, 2)`` points to segment (padded with -1), e.g. the ground-truth points in training;
                ``None``: the detections after NMS (score >= ``score_threshold``).
            valid: ``(B, N)`` validity of ``locations`` (default: coordinates >= 0).

        Returns:
            dict with ``det_logits`` / ``det_offsets`` (lists per detection level, ``(B, 1, h, w)`` /
            ``(B, 2, h, w)``), ``det_strides``, ``image_size`` (padded H, W), ``instance_logits`` ``(M, S, S)``,
            ``instance_origin`` ``(M, 2)``, ``instance_batch`` ``(M,)``, ``instance_locations`` ``(M, 2)``,
            ``instance_index`` ``(M,)`` (position in the padded ``locations``; -1 for detections) and
            ``instance_scores`` ``(M,)`` (1 for given points).
        """
        h0, w0 = image.shape[-2], image.shape[-1]
        x = self._pad(image)
        if self.training and min(x.shape[-2:]) < 2 * self.size_divisor:
            raise ValueError(f"training images must be at least {2 * self.size_divisor} px on each side (got "
                             f"{h0}x{w0}): the coarsest pyramid level needs 2x2 cells for its normalisation")
        fpn = self._features(x)
        logits, offsets = self._detect(fpn)
        out: dict[str, Any] = {
            "det_logits": logits,
            "det_offsets": offsets,
            "det_strides": list(self.detection_strides),
            "image_size": (int(x.shape[-2]), int(x.shape[-1])),
        }
        if locations is None:
            with torch.no_grad():
                pos, sco = self._decode(logits, offsets)
                locs, scores, batch = self._detections(pos, sco, h0, w0, self.score_threshold)
            index = torch.full_like(batch, -1)
        else:
            if valid is None:
                valid = (locations >= 0).all(-1)
            batch, index = torch.nonzero(valid, as_tuple=True)
            locs = locations[batch, index].to(x.dtype)
            scores = torch.ones_like(locs[:, 0])
            if self.proposal_swap_distance > 0 and locs.shape[0] > 0:
                locs = self._swap_with_detections(logits, offsets, locs, batch, h0, w0)
        feat = self.segmentor.feature_map(fpn[0])
        inst_logits, origin = self.segmentor(feat, fpn[0], locs, batch)
        out.update({
            "instance_logits": inst_logits,
            "instance_origin": origin,
            "instance_batch": batch,
            "instance_locations": locs,
            "instance_index": index,
            "instance_scores": scores,
        })
        return out

    @torch.no_grad()
    def _swap_with_detections(self, logits: list[torch.Tensor], offsets: list[torch.Tensor], locs: torch.Tensor,
                              batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Replace each given point by the nearest NMS detection within ``proposal_swap_distance`` (code-only)."""
        pos, sco = self._decode(logits, offsets)
        det, _, det_b = self._detections(pos, sco, height, width, self.score_threshold)
        if det.shape[0] == 0:
            return locs
        d2 = (locs[:, None, :] - det[None, :, :]).pow(2).sum(-1)
        d2 = torch.where(batch[:, None] == det_b[None, :], d2, torch.full_like(d2, float("inf")))
        best, arg = d2.min(1)
        near = best < self.proposal_swap_distance ** 2
        return torch.where(near[:, None], det[arg], locs)

    # ------------------------------------------------------------------------------------------------ inference API
    @torch.jit.export
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Instance segmentation of ``image`` ``(B, C, H, W)``.

        Returns:
            ``(B, 2, H, W)`` float: instance ids (1..n per image by decreasing detection score; 0 background) and
            the detection score of the cell owning each pixel (0 on background). Cells overlap-resolved by the
            higher score, masks thresholded at ``mask_threshold``, detections at ``score_threshold``.
        """
        bsz, h0, w0 = image.shape[0], image.shape[-2], image.shape[-1]
        x = self._pad(image)
        hp, wp = x.shape[-2], x.shape[-1]
        fpn = self._features(x)
        logits, offsets = self._detect(fpn)
        pos, sco = self._decode(logits, offsets)
        locs, scores, batch = self._detections(pos, sco, h0, w0, self.score_threshold)
        feat = self.segmentor.feature_map(fpn[0])
        probs: list[torch.Tensor] = []
        origins: list[torch.Tensor] = []
        n = locs.shape[0]
        chunk = self.instance_chunk
        if chunk <= 0:
            chunk = 512 if x.is_cuda else self.cpu_instance_chunk
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            lg, org = self.segmentor(feat, fpn[0], locs[start:stop], batch[start:stop])
            probs.append(torch.sigmoid(lg))
            origins.append(org)
        if n == 0:
            prob_t = torch.zeros((0, self.crop_size, self.crop_size), dtype=x.dtype, device=x.device)
            origin_t = torch.zeros((0, 2), dtype=torch.long, device=x.device)
        else:
            prob_t = torch.cat(probs, 0)
            origin_t = torch.cat(origins, 0)
        out = paint_instances(prob_t, origin_t, batch, scores, bsz, hp, wp, self.mask_threshold, self.min_area)
        return out[:, :, :h0, :w0]


class LacssInference(LacssNet):
    """:class:`LacssNet` whose ``forward(image)`` is :meth:`LacssNet.predict`: the inference / export network.

    Its ``state_dict`` is the principal's, so ``models/model.pt`` written by training loads directly.
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.predict(image)


class LacssPredictor(nn.Module):
    """Wrap a (possibly DDP-wrapped) training :class:`LacssNet` so that ``forward(image)`` predicts instances
    (used by the validation evaluator during training; shares the weights)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        net = getattr(self.network, "module", self.network)
        return net.predict(image)


def as_predictor(network: nn.Module) -> LacssPredictor:
    """The predictor view of a training network (see :class:`LacssPredictor`)."""
    return LacssPredictor(network)
