# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Step 0 of COIN: unsupervised cell instance segmentation (UCIS) seeds ``M^ucis``.

COIN is model-agnostic about its seeds (SSA, PSM, ...). Two routes:

- :class:`StainWatershedSeeds` (offline default, no weights): haematoxylin optical density from stain
  deconvolution -> automatic threshold -> clean-up -> distance-transform watershed (the post-processing SSA
  itself uses). It plays the role of the UCIS baseline.
- :class:`FolderSeeds`: instance masks produced by any other UCIS model, read from a folder by sample id
  (``.tif``/``.tiff``/``.png``/``.npy``/``.npz``; single-channel ids, or COIN's 3-channel PNG encoding
  ``id = B * 256 + G`` with white = ignore, decoded without the public code's modulo-256 wrap).

Both are callables ``seeds(image (3, H, W) float in [0, 1], sample_id) -> (H, W) int32`` (0 = background).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import filters

from monai_ext.errors import DataError
from monai_ext.postprocess.watershed import (
    binary_fill_holes,
    distance_watershed,
    footprint,
    relabel_sequential,
    remove_small_instances,
)
from monai_ext.transforms.coin import hematoxylin
from monai_ext.utils import to_numpy

__all__ = ["StainWatershedSeeds", "FolderSeeds", "decode_instance_png", "get_seeds", "SEED_SOURCES"]

_THRESHOLDS: dict[str, Callable[[np.ndarray], float]] = {
    "otsu": filters.threshold_otsu,
    "li": filters.threshold_li,
    "triangle": filters.threshold_triangle,
    "yen": filters.threshold_yen,
}


class StainWatershedSeeds:
    """Offline UCIS seeds: haematoxylin OD -> threshold -> opening / hole filling -> distance watershed.

    Args:
        threshold: ``"otsu"`` / ``"li"`` / ``"triangle"`` / ``"yen"`` (computed per image) or a fixed OD value.
        threshold_scale: multiplies an automatic threshold (> 1: stricter, fewer false positives).
        sigma: Gaussian smoothing of the haematoxylin channel (pixels).
        opening: radius of the binary opening that removes thin strands (0: none).
        min_size: smallest kept instance (pixels).
        min_distance: peak footprint radius of the watershed (COIN / SSA: 12 at 40x).
    """

    def __init__(
        self,
        threshold: str | float = "otsu",
        threshold_scale: float = 1.0,
        sigma: float = 1.0,
        opening: int = 1,
        min_size: int = 30,
        min_distance: int = 6,
    ) -> None:
        if isinstance(threshold, str) and threshold not in _THRESHOLDS:
            raise ValueError(f"threshold must be a number or one of {sorted(_THRESHOLDS)}, got {threshold!r}")
        self.threshold = threshold
        self.threshold_scale = float(threshold_scale)
        self.sigma = float(sigma)
        self.opening = int(opening)
        self.min_size = int(min_size)
        self.min_distance = int(min_distance)

    def foreground(self, image: Any) -> np.ndarray:
        """Binary nuclei mask of one RGB image ``(3, H, W)``."""
        h = hematoxylin(image, self.sigma)
        if isinstance(self.threshold, str):
            thr = _THRESHOLDS[self.threshold](h) * self.threshold_scale if np.ptp(h) > 0 else np.inf
        else:
            thr = float(self.threshold)
        mask = h > thr
        if self.opening > 0:
            mask = ndimage.binary_opening(mask, footprint(self.opening, 2))
        return binary_fill_holes(mask)

    def __call__(self, image: Any, sample_id: str | None = None) -> np.ndarray:
        mask = self.foreground(to_numpy(image))
        return distance_watershed(mask, min_distance=self.min_distance, min_size=self.min_size)


def decode_instance_png(arr: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Instance ids from an image array: single channel as is; 3/4 channels in COIN's encoding.

    COIN writes ``id = B * 256 + G`` (RGB order: ``arr[..., 2] * 256 + arr[..., 1]``) and white for ignore;
    a 3-channel image whose channels are equal is read as grey ids. Ignore pixels become ``-1``.
    """
    a = np.asarray(arr)
    if a.ndim == 2:
        return a.astype(np.int64)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        rgb = a[..., :3].astype(np.int64)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0]
        ids = rgb[..., 2] * 256 + rgb[..., 1]
        ids[(rgb == 255).all(-1)] = -1
        return ids
    raise DataError(f"cannot read instance ids from an array of shape {a.shape}", path)


class FolderSeeds:
    """Seeds imported from any UCIS model: ``<folder>/<sample id><suffix>.<ext>``.

    Args:
        folder: where the masks are.
        suffix: appended to the sample id before the extension (e.g. ``"_mask"``).
        exts: extensions tried in order.
        min_size: drop instances smaller than this (0: keep all).
        relabel: relabel ids to ``1..N``.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        suffix: str = "",
        exts: tuple[str, ...] = (".tif", ".tiff", ".png", ".npy", ".npz"),
        min_size: int = 0,
        relabel: bool = True,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError("seed folder does not exist", self.folder)
        self.suffix = suffix
        self.exts = tuple(exts)
        self.min_size = int(min_size)
        self.relabel = relabel

    def path_of(self, sample_id: str) -> Path:
        for ext in self.exts:
            p = self.folder / f"{sample_id}{self.suffix}{ext}"
            if p.is_file():
                return p
        raise DataError(f"no seed mask for sample {sample_id!r} (tried {', '.join(self.exts)})", self.folder)

    def read(self, path: Path) -> np.ndarray:
        ext = path.suffix.lower()
        try:
            if ext in (".tif", ".tiff"):
                import tifffile

                arr = tifffile.imread(path)
            elif ext == ".png":
                from PIL import Image

                with Image.open(path) as im:
                    arr = np.asarray(im)
            elif ext == ".npy":
                arr = np.load(path)
            elif ext == ".npz":
                with np.load(path) as z:
                    arr = z[z.files[0]]
            else:
                raise DataError(f"unsupported seed file type {ext}", path)
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable seed mask ({exc})", path) from exc
        arr = np.squeeze(arr)
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise DataError("seed mask holds non-integer values; expected instance ids", path)
        return decode_instance_png(arr, path)

    def __call__(self, image: Any, sample_id: str | None = None) -> np.ndarray:
        if sample_id is None:
            raise DataError("FolderSeeds needs the sample id to find its mask")
        path = self.path_of(str(sample_id))
        lab = self.read(path)
        spatial = tuple(to_numpy(image).shape[-2:]) if image is not None else lab.shape
        if lab.shape != spatial:
            raise DataError(f"seed mask shape {lab.shape} does not match the image shape {spatial}", path)
        lab = np.where(lab > 0, lab, 0)
        if self.min_size > 0:
            return remove_small_instances(lab, self.min_size, relabel=self.relabel)
        return relabel_sequential(lab) if self.relabel else lab.astype(np.int32)


SEED_SOURCES: dict[str, type] = {"stain_watershed": StainWatershedSeeds, "folder": FolderSeeds}


def get_seeds(kind: str = "stain_watershed", **kwargs: Any) -> Callable[..., np.ndarray]:
    """Seed generator by name: ``"stain_watershed"`` (offline) or ``"folder"`` (``folder=...``)."""
    if kind not in SEED_SOURCES:
        raise ValueError(f"unknown seed source {kind!r}; choose from {sorted(SEED_SOURCES)}")
    return SEED_SOURCES[kind](**kwargs)
