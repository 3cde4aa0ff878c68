# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Per-pixel feature extractors for COIN's pixel propagation (the "USS" features of Step 1).

An extractor maps an RGB image ``(3, H, W)`` in [0, 1] to a :class:`FeatureMap`: features ``(D, h, w)`` on a
grid of ``stride`` pixels (``h = ceil(H / stride)``), kept compact (``float16`` for ViTs). Full-resolution,
unit-norm features are never materialised for a whole image: :func:`iter_feature_tiles` resamples them tile by
tile (bilinear, the same as upsampling the whole map) when centroids and similarities are computed, so memory
per 1000x1000 image stays at ``D * h * w`` values plus one tile (the public code stores 768 x H x W fp16,
about 1.5 GB per image).

- :class:`FilterBankExtractor` (offline default, no weights): multi-scale haematoxylin / eosin filter bank
  (Gaussian, Laplacian of Gaussian, gradient magnitude, Hessian eigenvalues, local contrast, structure-tensor
  coherence), standardised per image: blob-like dark-haematoxylin pixels (nuclei) cluster, fibrous basophilic
  stroma and flat cytoplasm do not. Torch convolutions, on the image's device.
- :class:`ViTExtractor`: a timm ViT (MAE / DINO family) from a user checkpoint, with COIN's scheme: sliding
  window of ``min(H, W) / zoom`` pixels, each crop upscaled ``zoom``x (bicubic, to a multiple of the patch
  size), horizontal-flip averaged, last-block normed patch tokens, resized back and overlap-averaged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_ext.errors import DataError
from monai_ext.transforms.coin import rgb_to_hed
from monai_ext.utils import get_device

__all__ = [
    "FeatureMap",
    "FeatureExtractor",
    "FilterBankExtractor",
    "ViTExtractor",
    "iter_feature_tiles",
    "get_extractor",
    "EXTRACTORS",
]


@dataclass
class FeatureMap:
    """Features ``(D, h, w)`` of an ``(H, W)`` image on a grid of ``stride`` pixels (``stride=1``: per pixel)."""

    features: torch.Tensor
    image_size: tuple[int, int]
    stride: int = 1

    @property
    def dim(self) -> int:
        return int(self.features.shape[0])

    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


class FeatureExtractor:
    """Base: ``extractor(image) -> FeatureMap``. Subclasses implement :meth:`extract`."""

    stride: int = 1

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = get_device(device)

    def _as_tensor(self, image: Any) -> torch.Tensor:
        t = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(np.asarray(image))
        if t.ndim != 3 or t.shape[0] != 3:
            raise DataError(f"feature extractors take RGB images (3, H, W), got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise DataError("image holds NaN or infinite values")
        return t.to(self.device, torch.float32)

    def extract(self, image: torch.Tensor) -> FeatureMap:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, image: Any) -> FeatureMap:
        return self.extract(self._as_tensor(image))


# --------------------------------------------------------------------------------------------- filter bank
def _gauss_kernels(sigma: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1D Gaussian and its first / second derivative kernels (sampled, radius 3 sigma)."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    g1 = -x / sigma**2 * g
    g2 = (x**2 / sigma**4 - 1 / sigma**2) * g
    return g, g1, g2


def _sep(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
    """Separable 2D convolution of ``(C, H, W)`` with reflect padding."""
    c = x.shape[0]
    ry, rx = ky.numel() // 2, kx.numel() // 2
    y = F.pad(x[None], (0, 0, ry, ry), mode="reflect")
    y = F.conv2d(y, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    y = F.pad(y, (rx, rx, 0, 0), mode="reflect")
    y = F.conv2d(y, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return y[0]


#: optical density added to the stain sum of the haematoxylin share (keeps unstained background near 0, not noise)
FRACTION_EPS = 0.05


class FilterBankExtractor(FeatureExtractor):
    """Offline multi-scale stain / texture features (no pretrained weights).

    Channels, for each ``sigma`` in ``sigmas`` on the haematoxylin OD ``h``: ``G*h``, ``-sigma^2 LoG*h`` (bright
    blobs positive), ``sigma |grad G*h|``, the two Hessian eigenvalues ``sigma^2 l1, l2`` (both negative in
    blobs, one in ridges), local contrast ``sqrt(G*h^2 - (G*h)^2)`` and structure-tensor coherence (high on
    fibres); plus ``G*e`` of the eosin OD at ``eosin_sigmas`` and, at ``fraction_sigmas``, the smoothed
    haematoxylin share of the stain ``G*h / (G*h + G*e)``: pale (vesicular) nuclei have a low haematoxylin density
    but still a high share, which separates them from pale eosinophilic stroma. Each channel is standardised over
    the image (per-image stain normalisation) and weighted so the haematoxylin intensity group dominates.

    Args:
        sigmas: scales in pixels (nuclei of radius ``r`` respond most at ``sigma ~ r / sqrt(2)``).
        eosin_sigmas: scales of the eosin channel.
        fraction_sigmas: scales of the haematoxylin-share channel (empty: none, the default). On synthetic H&E,
            ``(1, 2, 4)`` gave a validation student AJI of 0.495 vs 0.481 on one data draw, and 0.506 vs 0.509 on a
            second (with ``marker_erosion`` 0): no reliable gain, so it is off by default.
        stride: output grid (1 = per pixel; >1 average-pools the features, saving memory).
        tile: images larger than this (per side) are processed in tiles with a halo (bounded memory).
        device: torch device (default: CUDA if available).
    """

    def __init__(
        self,
        sigmas: Sequence[float] = (1.0, 2.0, 4.0),
        eosin_sigmas: Sequence[float] = (1.0, 4.0),
        fraction_sigmas: Sequence[float] = (),
        stride: int = 1,
        tile: int = 1024,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(device)
        self.sigmas = tuple(float(s) for s in sigmas)
        self.eosin_sigmas = tuple(float(s) for s in eosin_sigmas)
        self.fraction_sigmas = tuple(float(s) for s in fraction_sigmas)
        self.stride = int(stride)
        self.tile = int(tile)
        if self.stride < 1 or self.tile < 32:
            raise ValueError("stride must be >= 1 and tile >= 32")

    @property
    def dim(self) -> int:
        return 7 * len(self.sigmas) + len(self.eosin_sigmas) + len(self.fraction_sigmas)

    def _raw(self, rgb: torch.Tensor) -> torch.Tensor:
        hed = rgb_to_hed(rgb)
        h, e = hed[0:1], hed[1:2]
        chans = []
        smooth: dict[tuple[str, float], torch.Tensor] = {}  # G_sigma * h / e, computed once per stain and scale

        def blurred(stain: str, s: float) -> torch.Tensor:
            if (stain, s) not in smooth:
                g = _gauss_kernels(s, rgb.device)[0]
                smooth[(stain, s)] = _sep(h if stain == "h" else e, g, g)
            return smooth[(stain, s)]

        for s in self.sigmas:
            g, g1, g2 = _gauss_kernels(s, rgb.device)
            gh = blurred("h", s)
            hy, hx = _sep(h, g1, g), _sep(h, g, g1)
            hyy, hxx, hxy = _sep(h, g2, g), _sep(h, g, g2), _sep(h, g1, g1)
            tr, det_root = hxx + hyy, torch.sqrt(((hxx - hyy) * 0.5) ** 2 + hxy**2)
            l1, l2 = tr * 0.5 - det_root, tr * 0.5 + det_root  # l1 <= l2
            var = (_sep(h * h, g, g) - gh**2).clamp_min(0)
            # structure tensor at integration scale 2 sigma: coherence of the gradient orientation
            gi = _gauss_kernels(2 * s, rgb.device)[0]
            jxx, jyy, jxy = _sep(hx * hx, gi, gi), _sep(hy * hy, gi, gi), _sep(hx * hy, gi, gi)
            coh = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-4)
            chans += [gh, -(s**2) * tr, s * torch.sqrt(hx**2 + hy**2), s**2 * l1, s**2 * l2, var.sqrt(), coh]
        for s in self.eosin_sigmas:
            chans.append(blurred("e", s))
        for s in self.fraction_sigmas:
            gh, ge = blurred("h", s), blurred("e", s)
            chans.append(gh / (gh + ge + FRACTION_EPS))
        return torch.cat(chans, 0)

    def _tiled_raw(self, rgb: torch.Tensor) -> torch.Tensor:
        H, W = rgb.shape[-2:]
        if max(H, W) <= self.tile:
            return self._raw(rgb)
        # derivative (3 sigma) + structure tensor (6 sigma) support
        halo = int(math.ceil(9 * max((*self.sigmas, *self.eosin_sigmas, *self.fraction_sigmas)))) + 4
        out = torch.empty((self.dim, H, W), dtype=torch.float32, device=rgb.device)
        for y0 in range(0, H, self.tile):
            for x0 in range(0, W, self.tile):  # a handful of big tiles
                y1, x1 = min(y0 + self.tile, H), min(x0 + self.tile, W)
                ya, xa = max(y0 - halo, 0), max(x0 - halo, 0)
                yb, xb = min(y1 + halo, H), min(x1 + halo, W)
                part = self._raw(rgb[:, ya:yb, xa:xb])
                out[:, y0:y1, x0:x1] = part[:, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
        return out

    def extract(self, image: torch.Tensor) -> FeatureMap:
        f = self._tiled_raw(image)
        mean = f.mean(dim=(1, 2), keepdim=True)
        std = f.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        f = (f - mean) / std
        # the intensity-like channels (G*h, LoG) carry the nucleus/background contrast: weight them up
        w = torch.ones(self.dim, device=f.device)
        w[0 : 7 * len(self.sigmas) : 7] = 2.0
        w[1 : 7 * len(self.sigmas) : 7] = 1.5
        f = f * w[:, None, None]
        if self.stride > 1:
            f = F.avg_pool2d(f[None], self.stride, self.stride, ceil_mode=True)[0]
        return FeatureMap(f.contiguous(), tuple(image.shape[-2:]), self.stride)


# --------------------------------------------------------------------------------------------- ViT
class ViTExtractor(FeatureExtractor):
    """Patch features of a timm ViT loaded from a user checkpoint (MAE / DINO family), COIN's sliding scheme.

    Args:
        model_name: timm architecture (e.g. ``"vit_base_patch16_224.mae"``; weights are never downloaded).
        checkpoint: path of the weights (timm ``load_checkpoint``: plain state_dict or ``{"state_dict"|"model": ...}``).
        zoom: window = ``min(H, W) / zoom`` (COIN: 6) and crops are upscaled ``zoom``x.
        window: fixed window size in pixels instead of ``min(H, W) / zoom`` (use it for large images).
        overlap: window overlap fraction (COIN: stride = 2/3 window, i.e. 1/3 overlap).
        flip: average with the horizontally flipped crop.
        stride: output grid in image pixels (features are stored at ``H / stride``; 4 keeps a 1000^2 image at
            250^2 x D fp16).
        dtype: storage dtype of the feature map.
        batch_size: crops per forward pass.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. a tiny test config).
        device: torch device.
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: str | os.PathLike | None,
        zoom: float = 6.0,
        window: int | None = None,
        overlap: float = 1.0 / 3.0,
        flip: bool = True,
        stride: int = 4,
        dtype: torch.dtype = torch.float16,
        batch_size: int = 4,
        model_kwargs: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(device)
        import timm

        if checkpoint is not None and not os.path.isfile(checkpoint):
            raise DataError("ViT checkpoint not found", checkpoint)
        kwargs = {"num_classes": 0, "dynamic_img_size": True, **(model_kwargs or {})}
        self.model = timm.create_model(model_name, pretrained=False, checkpoint_path=checkpoint or None, **kwargs)
        self.model.eval().to(self.device)
        cfg = timm.data.resolve_model_data_config(self.model)
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        ps = self.model.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        self.zoom, self.window, self.overlap, self.flip = float(zoom), window, float(overlap), bool(flip)
        self.stride, self.dtype, self.batch_size = int(stride), dtype, int(batch_size)

    @property
    def dim(self) -> int:
        return int(self.model.embed_dim)

    def _tokens(self, crops: torch.Tensor) -> torch.Tensor:
        """Normed last-block patch tokens ``(B, D, gh, gw)`` of normalised crops."""
        x = (crops - self.mean) / self.std
        tok = self.model.forward_features(x)[:, self.prefix :]
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        return tok.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)

    def _windows(self, H: int, W: int) -> tuple[int, list[tuple[int, int]]]:
        win = int(self.window) if self.window else max(self.patch, int(round(min(H, W) / self.zoom)))
        win = min(win, H, W)
        step = max(1, int(round(win * (1 - self.overlap))))

        def starts(n: int) -> list[int]:
            s = list(range(0, max(n - win, 0) + 1, step))
            if s[-1] + win < n:
                s.append(n - win)
            return s

        return win, [(y, x) for y in starts(H) for x in starts(W)]

    def extract(self, image: torch.Tensor) -> FeatureMap:
        H, W = image.shape[-2:]
        win, origins = self._windows(H, W)
        side = max(self.patch, int(round(win * self.zoom / self.patch)) * self.patch)
        s = self.stride
        h, w = -(-H // s), -(-W // s)
        acc = torch.zeros((self.dim, h, w), dtype=torch.float32, device=self.device)
        cnt = torch.zeros((1, h, w), dtype=torch.float32, device=self.device)
        for b0 in range(0, len(origins), self.batch_size):  # batches of windows
            batch = origins[b0 : b0 + self.batch_size]
            crops = torch.stack([image[:, y : y + win, x : x + win] for y, x in batch])
            up = F.interpolate(crops, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
            tok = self._tokens(up)
            if self.flip:
                tok = 0.5 * (tok + self._tokens(up.flip(-1)).flip(-1))
            for (y, x), t in zip(batch, tok):
                ya, xa = y // s, x // s
                yb, xb = -(-(y + win) // s), -(-(x + win) // s)
                acc[:, ya:yb, xa:xb] += F.interpolate(t[None].float(), size=(yb - ya, xb - xa), mode="bilinear",
                                                      align_corners=False)[0]
                cnt[:, ya:yb, xa:xb] += 1
        feats = (acc / cnt.clamp_min(1)).to(self.dtype)
        return FeatureMap(feats, (int(H), int(W)), s)


# --------------------------------------------------------------------------------------------- tiles
def iter_feature_tiles(
    fmap: FeatureMap, tile: int = 256, normalize: bool = True
) -> Iterator[tuple[tuple[slice, slice], torch.Tensor]]:
    """Full-resolution features of ``fmap``, one tile at a time: ``((ys, xs), feats (D, th, tw) float32)``.

    For ``stride > 1`` every tile is resampled bilinearly from the feature grid with the global pixel ->
    grid mapping (``(y + 0.5) / stride - 0.5``, i.e. ``F.interpolate(align_corners=False)`` of the whole
    map), so stitched tiles equal the whole-map upsampling. ``normalize`` makes every pixel unit-norm.
    """
    H, W = fmap.image_size
    f = fmap.features
    s = fmap.stride
    h, w = f.shape[-2:]
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
            if s == 1:
                t = f[:, y0:y1, x0:x1].float()
            else:
                gy = ((torch.arange(y0, y1, device=f.device, dtype=torch.float32) + 0.5) / s - 0.5).clamp(0, h - 1)
                gx = ((torch.arange(x0, x1, device=f.device, dtype=torch.float32) + 0.5) / s - 0.5).clamp(0, w - 1)
                # normalised grid_sample coordinates (align_corners=True on the clamped index grid)
                ny = gy / max(h - 1, 1) * 2 - 1
                nx = gx / max(w - 1, 1) * 2 - 1
                grid = torch.stack(torch.meshgrid(nx, ny, indexing="xy"), -1)[None]
                t = F.grid_sample(f[None].float(), grid, mode="bilinear", align_corners=True)[0]
            if normalize:
                t = F.normalize(t, dim=0, eps=1e-8)
            yield (slice(y0, y1), slice(x0, x1)), t


EXTRACTORS: dict[str, type[FeatureExtractor]] = {"filter_bank": FilterBankExtractor, "vit": ViTExtractor}


def get_extractor(kind: str = "filter_bank", **kwargs: Any) -> FeatureExtractor:
    """Extractor by name: ``"filter_bank"`` (offline default) or ``"vit"`` (``model_name``, ``checkpoint``)."""
    if kind not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {kind!r}; choose from {sorted(EXTRACTORS)}")
    return EXTRACTORS[kind](**kwargs)
