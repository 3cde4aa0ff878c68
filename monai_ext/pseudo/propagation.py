# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Step 1 of COIN: pixel-level propagation of the UCIS seeds (USS features + CAP + OT push + CRF + watershed).

1. **Class-level average pooling (CAP, Eq. 3).** Pixel features are unit-normalised. The foreground centroid
   is the mean feature over the seed instances of the *whole training set* (``accumulate=True``, the public
   code's ``--accumulate_centroids``); the background centroid is the mean over the seed background of each
   image. :class:`CentroidAccumulator` keeps only running sums (and a ``state_dict`` for resuming).
2. **Cosine similarity** ``S^us`` ``(2, H, W)`` = (background, foreground) similarity of every pixel.
3. **OT push (Eq. 4).** Per-channel min-max, ``bg <- max(bg, 1 - fg)``; entropic OT between the ``M`` pixels
   (uniform mass ``1/M``) and the 2 classes (mass ``1/2``) with cost ``1 - S``, solved by POT's Sinkhorn with
   ``reg`` = the paper's lambda (0.1; robust over 0.01-0.4, supplement Fig. 11); the plan ``T`` is min-max
   normalised per class and ``S^OT = S^us * T``, then min-max and ``bg <- max(bg, 1 - fg)`` again. Vectorised
   over all pixels at once (``M x 2`` arrays, torch backend, GPU when available).
4. **CRF** (optional, ``pydensecrf2`` / ``pydensecrf``), then the argmax (``fg > bg``); without OT the public
   code thresholds the foreground similarity at 0.4 instead.
5. **Watershed (Eq. 5)** of the filled binary mask into instances.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from monai_ext.errors import DataError
from monai_ext.postprocess.watershed import distance_watershed
from monai_ext.utils import to_numpy

from .features import FeatureExtractor, FeatureMap, iter_feature_tiles

__all__ = [
    "CentroidAccumulator",
    "cosine_similarity_map",
    "minmax",
    "ot_push",
    "dense_crf",
    "crf_available",
    "PixelPropagation",
]

logger = logging.getLogger(__name__)


def minmax(x: torch.Tensor, dim: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    """Min-max normalise each channel of ``(C, ...)`` to [0, 1] over ``dim``."""
    lo = x.amin(dim=dim, keepdim=True)
    hi = x.amax(dim=dim, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


class CentroidAccumulator:
    """Running sums of unit-norm features over foreground (dataset-level) and background (per image) pixels."""

    def __init__(self) -> None:
        self.fg_sum: torch.Tensor | None = None
        self.fg_count = 0.0
        self.n_images = 0

    @staticmethod
    def masked_sums(
        fmap: FeatureMap, mask: np.ndarray, tile: int = 256
    ) -> tuple[torch.Tensor, float, torch.Tensor, float]:
        """Sums of unit-norm features over ``mask`` and over ``~mask`` of one image (tile by tile)."""
        m = torch.as_tensor(np.asarray(mask, bool), device=fmap.features.device)
        if tuple(m.shape) != tuple(fmap.image_size):
            raise DataError(f"seed mask shape {tuple(m.shape)} does not match the image {fmap.image_size}")
        fg = torch.zeros(fmap.dim, dtype=torch.float64, device=m.device)
        bg = torch.zeros_like(fg)
        for (ys, xs), f in iter_feature_tiles(fmap, tile):
            mt = m[ys, xs].to(f.dtype)
            fg += torch.einsum("dhw,hw->d", f, mt).double()
            bg += torch.einsum("dhw,hw->d", f, 1 - mt).double()
        n_fg = float(m.sum())
        return fg, n_fg, bg, float(m.numel() - n_fg)

    def add(self, fmap: FeatureMap, seeds: np.ndarray, tile: int = 256) -> torch.Tensor:
        """Accumulate one image's foreground sums; return its background centroid (unit norm)."""
        fg, n_fg, bg, n_bg = self.masked_sums(fmap, np.asarray(seeds) > 0, tile)
        self.fg_sum = fg.cpu() if self.fg_sum is None else self.fg_sum + fg.cpu()
        self.fg_count += n_fg
        self.n_images += 1
        return torch.nn.functional.normalize((bg / max(n_bg, 1.0)).float(), dim=0)

    def foreground(self) -> torch.Tensor:
        """Dataset foreground centroid (unit norm)."""
        if self.fg_sum is None or self.fg_count == 0:
            raise DataError("no seed foreground pixels were accumulated: the UCIS seeds are empty on every image")
        return torch.nn.functional.normalize((self.fg_sum / self.fg_count).float(), dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"fg_sum": self.fg_sum, "fg_count": self.fg_count, "n_images": self.n_images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fg_sum, self.fg_count, self.n_images = state["fg_sum"], float(state["fg_count"]), int(state["n_images"])


def cosine_similarity_map(fmap: FeatureMap, centroids: torch.Tensor, tile: int = 256) -> torch.Tensor:
    """Cosine similarity ``(K, H, W)`` of every pixel's unit feature with ``K`` unit centroids ``(K, D)``."""
    H, W = fmap.image_size
    c = torch.nn.functional.normalize(centroids.float().to(fmap.features.device), dim=1)
    out = torch.empty((c.shape[0], H, W), dtype=torch.float32, device=c.device)
    for (ys, xs), f in iter_feature_tiles(fmap, tile):
        out[:, ys, xs] = torch.einsum("dhw,kd->khw", f, c)
    return out


def _bg_floor(s: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.maximum(s[0], 1 - s[1]), s[1]])


def ot_push(
    sim: torch.Tensor, reg: float = 0.1, num_iter: int = 100, stop_thr: float = 1e-2, method: str = "sinkhorn_log"
) -> torch.Tensor:
    """COIN's OT push of a (background, foreground) similarity map ``(2, H, W)`` -> ``S^OT`` ``(2, H, W)``.

    Solves ``min_T sum T_ij (1 - S_ij) - reg * H(T)`` with pixel marginal ``1/M`` and class marginal ``1/2``
    by POT's Sinkhorn (``reg`` is the paper's lambda), then ``S^OT = S * minmax(T)``; see the module docstring.
    ``method="sinkhorn_log"`` (POT's log-domain solver) is stable for any ``reg``; ``"sinkhorn"`` is POT's plain
    scaling (the public code's choice) and is faster for ``reg >= 0.05``.
    """
    import ot

    if sim.ndim != 3 or sim.shape[0] != 2:
        raise DataError(f"ot_push expects a (2, H, W) similarity map, got {tuple(sim.shape)}")
    if reg <= 0:
        raise ValueError(f"reg (lambda) must be > 0, got {reg}")
    s = _bg_floor(minmax(sim.float()))
    _, H, W = s.shape
    m = H * W
    cost = (1 - s).reshape(2, m).T.double().contiguous()  # (M, 2)
    a = torch.full((m,), 1.0 / m, dtype=torch.float64, device=s.device)
    b = torch.full((2,), 0.5, dtype=torch.float64, device=s.device)
    plan = ot.sinkhorn(a, b, cost, reg, method=method, numItermax=num_iter, stopThr=stop_thr, warn=False)
    t = plan.T.reshape(2, H, W).float()
    return _bg_floor(minmax(s * minmax(t)))


def crf_available() -> bool:
    """Whether a DenseCRF package (``pydensecrf2`` or ``pydensecrf``) can be imported."""
    try:
        _densecrf_module()
        return True
    except ImportError:
        return False


def _densecrf_module() -> Any:
    try:
        import pydensecrf2.densecrf as dcrf  # type: ignore[import-not-found]

        return dcrf
    except ImportError:
        import pydensecrf.densecrf as dcrf  # type: ignore[import-not-found]

        return dcrf


def dense_crf(
    image: Any,
    prob: torch.Tensor | np.ndarray,
    iterations: int = 10,
    gauss_sxy: float = 1.0,
    gauss_compat: float = 3.0,
    bilateral_sxy: float = 67.0,
    bilateral_srgb: float = 3.0,
    bilateral_compat: float = 4.0,
) -> np.ndarray:
    """Fully connected CRF (Kraehenbuehl & Koltun) of class probabilities ``(K, H, W)``; returns ``(K, H, W)``.

    Parameters are the public COIN code's. Needs the optional ``pydensecrf2`` (or ``pydensecrf``) package.
    """
    try:
        dcrf = _densecrf_module()
    except ImportError as exc:
        raise ImportError(
            "the CRF step needs the optional package pydensecrf2 (pip install pydensecrf2); set crf=false otherwise"
        ) from exc
    p = np.ascontiguousarray(to_numpy(prob).astype(np.float32))
    k, H, W = p.shape
    p = p / np.clip(p.sum(0, keepdims=True), 1e-8, None)
    rgb = np.ascontiguousarray((np.clip(to_numpy(image), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0))
    d = dcrf.DenseCRF2D(W, H, k)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(p, 1e-8, 1)).reshape(k, -1)))
    d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    d.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=rgb, compat=bilateral_compat)
    return np.asarray(d.inference(iterations), np.float32).reshape(k, H, W)


class PixelPropagation:
    """COIN Step 1: seeds -> dataset foreground centroid -> per-image similarity -> OT -> (CRF) -> instances.

    Use: :meth:`fit` over the training images and their seeds (accumulates the foreground centroid; features
    are recomputed in the second pass rather than stored), then ``propagation(image, seeds)`` per image.

    Args:
        extractor: a :class:`~monai_ext.pseudo.features.FeatureExtractor`.
        use_ot: apply the OT push (paper default); else threshold the min-maxed similarity at ``threshold``.
        reg: Sinkhorn entropic regularisation (paper lambda, default 0.1).
        num_iter, stop_thr: Sinkhorn iteration cap and stopping threshold (public code: 100, 1e-2).
        crf: apply the DenseCRF (needs ``pydensecrf2``).
        threshold: foreground cut without OT (public code: 0.4).
        accumulate: dataset-level foreground centroid (paper); ``False``: per-image foreground centroids.
        min_distance, min_size, sigma: watershed settings (COIN Eq. 5: ``disk(12)``, ``sigma=1``).
        tile: tile side for full-resolution feature resampling.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        use_ot: bool = True,
        reg: float = 0.1,
        num_iter: int = 100,
        stop_thr: float = 1e-2,
        crf: bool = False,
        crf_params: dict[str, float] | None = None,
        threshold: float = 0.4,
        accumulate: bool = True,
        min_distance: int = 6,
        min_size: int = 30,
        sigma: float = 1.0,
        tile: int = 256,
    ) -> None:
        self.extractor = extractor
        self.use_ot, self.reg, self.num_iter, self.stop_thr = bool(use_ot), float(reg), int(num_iter), float(stop_thr)
        self.crf, self.crf_params = bool(crf), dict(crf_params or {})
        if self.crf and not crf_available():
            raise ImportError("crf=True needs the optional package pydensecrf2 (pip install pydensecrf2)")
        self.threshold, self.accumulate = float(threshold), bool(accumulate)
        self.min_distance, self.min_size = int(min_distance), int(min_size)
        self.sigma, self.tile = float(sigma), int(tile)
        self.centroids = CentroidAccumulator()

    def fit(self, items: Iterable[tuple[Any, np.ndarray]]) -> PixelPropagation:
        """Accumulate the foreground centroid over ``(image, seeds)`` pairs (the training set)."""
        for image, seeds in items:
            self.centroids.add(self.extractor(image), seeds, self.tile)
        return self

    def similarity(self, image: Any, seeds: np.ndarray, fmap: FeatureMap | None = None) -> torch.Tensor:
        """``S^us`` ``(2, H, W)``: cosine similarity to the (background, foreground) centroids."""
        fmap = self.extractor(image) if fmap is None else fmap
        seeds = np.asarray(seeds)
        fg_sum, n_fg, bg_sum, n_bg = CentroidAccumulator.masked_sums(fmap, seeds > 0, self.tile)
        bg = torch.nn.functional.normalize((bg_sum / max(n_bg, 1.0)).float(), dim=0)
        if self.accumulate and self.centroids.fg_sum is not None:
            fg = self.centroids.foreground().to(bg.device)
        else:
            if n_fg == 0:
                raise DataError("the seeds of this image are empty and no dataset centroid was fitted")
            fg = torch.nn.functional.normalize((fg_sum / n_fg).float(), dim=0)
        return cosine_similarity_map(fmap, torch.stack([bg, fg]), self.tile)

    def semantic(self, image: Any, seeds: np.ndarray, fmap: FeatureMap | None = None) -> np.ndarray:
        """Foreground mask ``(H, W)`` bool after OT (and CRF)."""
        sim = self.similarity(image, seeds, fmap)
        if self.use_ot:
            prob = ot_push(sim, self.reg, self.num_iter, self.stop_thr)
        else:
            s = minmax(sim)
            prob = torch.stack([1 - (s[1] > self.threshold).float(), (s[1] > self.threshold).float()])
            prob = prob * 0.8 + 0.1 if self.crf else prob
        if self.crf:
            p = dense_crf(image, prob, **self.crf_params)
            return p[1] > p[0]
        return (prob[1] > prob[0]).cpu().numpy()

    def __call__(self, image: Any, seeds: np.ndarray, fmap: FeatureMap | None = None) -> np.ndarray:
        """Instances ``(H, W)`` int32 of one image."""
        mask = self.semantic(image, seeds, fmap)
        return distance_watershed(mask, min_distance=self.min_distance, sigma=self.sigma, min_size=self.min_size)
