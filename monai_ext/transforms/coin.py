# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""COIN transforms: H&E stain deconvolution, stain augmentation, pseudo-label / instance -> (seg, edge) targets,
and the network output -> instances post-processing.

Stain deconvolution follows Ruifrok & Johnston (2001) in optical-density units (``OD = -log10(I)``, the
Beer-Lambert law), with scikit-image's H/E/DAB matrix, so the haematoxylin channel is ~0 on white and ~0.3-1.5
on nuclei whatever the image's dynamic range.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage
from skimage.color import hed_from_rgb, rgb_from_hed
from skimage.segmentation import find_boundaries

from monai_ext.errors import DataError
from monai_ext.postprocess.watershed import marker_watershed
from monai_ext.utils import to_numpy

__all__ = [
    "IGNORE_INDEX",
    "COIN_WATERSHED",
    "rgb_to_hed",
    "hed_to_rgb",
    "hematoxylin",
    "instance_edges",
    "instances_to_targets",
    "instance_confidence",
    "HEDChanneld",
    "RandHEDJitterd",
    "PseudoTargetsd",
    "InstanceTargetsd",
    "COINInstancesd",
]

#: class value of pixels excluded from the loss in pseudo seg / edge maps (CONVENTIONS.md).
IGNORE_INDEX = 255
#: marker-watershed settings used for COIN students (edge cores, split at necks by the core distance map).
COIN_WATERSHED: dict[str, Any] = {"fg_threshold": 0.5, "edge_threshold": "otsu", "marker_erosion": 1,
                                    "min_marker_size": 16, "min_size": 16, "core_min_distance": 8}
_EPS = 1e-6


def _check_rgb(image: Any) -> None:
    if image.ndim != 3 or image.shape[0] != 3:
        raise DataError(f"expected a channel-first RGB image (3, H, W), got shape {tuple(image.shape)}")


def rgb_to_hed(image: Any, clamp: bool = True) -> Any:
    """RGB ``(3, H, W)`` in [0, 1] (numpy or torch) -> H, E, DAB optical densities ``(3, H, W)``.

    ``OD = -log10(max(I, 1e-6))`` projected on the inverse of the Ruifrok stain matrix; torch inputs stay on
    their device (used by the feature extractor on GPU). ``clamp`` sets negative densities (noise, stains
    outside the H/E/DAB model) to 0; without it :func:`hed_to_rgb` inverts the conversion exactly.
    """
    _check_rgb(image)
    if isinstance(image, torch.Tensor):
        od = -torch.log10(image.float().clamp_min(_EPS))
        mat = torch.as_tensor(hed_from_rgb, dtype=od.dtype, device=od.device)
        out = torch.einsum("chw,cd->dhw", od, mat)
        return out.clamp_min(0.0) if clamp else out
    od = -np.log10(np.maximum(np.asarray(image, np.float32), _EPS))
    out = np.einsum("chw,cd->dhw", od, hed_from_rgb.astype(np.float32)).astype(np.float32)
    return np.maximum(out, 0.0) if clamp else out


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed` (numpy): ``(3, H, W)`` stain densities -> RGB in [0, 1]."""
    od = np.einsum("dhw,dc->chw", np.asarray(hed, np.float32), rgb_from_hed.astype(np.float32))
    return np.clip(np.power(10.0, -od), 0.0, 1.0).astype(np.float32)


def hematoxylin(image: Any, sigma: float = 0.0) -> np.ndarray:
    """Haematoxylin optical density ``(H, W)`` of an RGB image, optionally Gaussian-smoothed."""
    h = to_numpy(rgb_to_hed(to_numpy(image)))[0]
    return ndimage.gaussian_filter(h, sigma) if sigma > 0 else h


def instance_edges(labels: np.ndarray, mode: str = "inner", width: int = 1) -> np.ndarray:
    """Boundary pixels of every instance (``labels > 0``), as ``bool``; negatives (ignore) are not instances.

    Equivalent to the union of per-instance Canny edges of binary masks used by COIN (Eq. 10): a binary step
    has its edge exactly on the instance contour. ``mode`` is scikit-image's ``find_boundaries`` mode
    (``"inner"``: the instance's own contour pixels, so two touching nuclei give a 2-pixel separating line).
    ``width > 1`` thickens the contour inwards to a band of ``width`` pixels inside the instances (a deviation
    from the paper's 1-pixel Canny edge, configurable: a thin edge is hard to learn for a small student and its
    probability stays uncalibrated, so object cores, the markers of the edge-aware decoding, do not separate).
    """
    lab = np.where(np.asarray(labels) > 0, labels, 0)
    edge = find_boundaries(lab, mode=mode) & (lab > 0) if mode == "inner" else find_boundaries(lab, mode=mode)
    if width > 1:
        edge = ndimage.binary_dilation(edge, ndimage.generate_binary_structure(lab.ndim, 1), iterations=width - 1)
        edge &= lab > 0
    return edge


def instances_to_targets(labels: np.ndarray, edge_mode: str = "inner", edge_width: int = 1
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels (``-1`` = ignore) -> ``seg`` (0/1/255) and ``edge`` (0/1/255) uint8 maps (COIN Eq. 9-10);
    ``edge_width``: see :func:`instance_edges`."""
    lab = np.asarray(labels)
    seg = (lab > 0).astype(np.uint8)
    edge = instance_edges(lab, edge_mode, edge_width).astype(np.uint8)
    ign = lab < 0
    seg[ign] = IGNORE_INDEX
    edge[ign] = IGNORE_INDEX
    return seg, edge


def instance_confidence(labels: np.ndarray, prob: np.ndarray) -> dict[int, float]:
    """Mean of ``prob`` over each instance (one ``bincount``): ``{id: confidence}``."""
    lab = np.asarray(labels).ravel().astype(np.int64)
    keep = lab > 0
    if not keep.any():
        return {}
    sums = np.bincount(lab[keep], weights=np.asarray(prob, np.float64).ravel()[keep])
    cnt = np.bincount(lab[keep])
    ids = np.flatnonzero(cnt)
    return {int(i): float(sums[i] / cnt[i]) for i in ids}


class HEDChanneld(MapTransform):
    """Add the haematoxylin optical density of ``d[keys]`` (RGB) as ``d[output_key]`` ``(1, H, W)`` float32."""

    backend = ["numpy", "torch"]

    def __init__(self, keys: str = "image", output_key: str = "hematoxylin", sigma: float = 0.0) -> None:
        super().__init__(keys)
        self.output_key = output_key
        self.sigma = float(sigma)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = hematoxylin(d[key], self.sigma)[None].astype(np.float32)
        return d


class RandHEDJitterd(Randomizable, MapTransform):
    """Stain augmentation in H&E optical-density space (Tellez et al. 2018): ``s' = a * s + b`` for H and E.

    The conversion is not clamped, so with ``a = 1, b = 0`` the image comes back unchanged (a clamped
    round trip shifts colours wherever the residual "DAB" density is negative, i.e. most H&E pixels).

    Args:
        keys: RGB images in [0, 1] ``(3, H, W)``.
        prob: probability of applying.
        sigma_scale: ``a ~ U(1 - sigma_scale, 1 + sigma_scale)`` per stain.
        sigma_shift: ``b ~ U(-sigma_shift, sigma_shift)`` (OD units).
    """

    backend = ["numpy"]

    def __init__(
        self, keys: str = "image", prob: float = 0.5, sigma_scale: float = 0.15, sigma_shift: float = 0.03
    ) -> None:
        MapTransform.__init__(self, keys)
        self.prob = float(prob)
        self.sigma_scale = float(sigma_scale)
        self.sigma_shift = float(sigma_shift)
        self._do = False
        self._a = np.ones(3, np.float32)
        self._b = np.zeros(3, np.float32)

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob
        self._a = self.R.uniform(1 - self.sigma_scale, 1 + self.sigma_scale, 3).astype(np.float32)
        self._b = self.R.uniform(-self.sigma_shift, self.sigma_shift, 3).astype(np.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            arr = to_numpy(img).astype(np.float32)
            hed = rgb_to_hed(arr, clamp=False)  # exact round trip: only the stains are perturbed
            hed[:2] = hed[:2] * self._a[:2, None, None] + self._b[:2, None, None]
            out = np.clip(hed_to_rgb(hed), 0.0, 1.0).astype(np.float32)
            d[key] = torch.as_tensor(out) if isinstance(img, torch.Tensor) else out
        return d


class PseudoTargetsd(MapTransform):
    """Stored pseudo-labels -> training targets ``seg`` and ``edge`` ``(1, H, W)`` int64 with 255 = ignore.

    Accepts either stored class maps (``seg`` / ``edge`` arrays) or an instance map (``instances`` with ``-1`` =
    ignore), from which both targets are derived with :func:`instances_to_targets`.
    """

    backend = ["numpy"]

    def __init__(self, keys: str = "instances", seg_key: str = "seg", edge_key: str = "edge",
                 edge_mode: str = "inner", allow_missing_keys: bool = True, edge_width: int = 1) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.seg_key, self.edge_key, self.edge_mode, self.edge_width = seg_key, edge_key, edge_mode, int(edge_width)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.seg_key in d and self.edge_key in d:
            d[self.seg_key] = np.asarray(to_numpy(d[self.seg_key]), np.int64)
            d[self.edge_key] = np.asarray(to_numpy(d[self.edge_key]), np.int64)
            return d
        for key in self.key_iterator(d):
            lab = to_numpy(d[key])
            lab = lab[0] if lab.ndim == 3 else lab
            seg, edge = instances_to_targets(lab, self.edge_mode, self.edge_width)
            d[self.seg_key] = seg[None].astype(np.int64)
            d[self.edge_key] = edge[None].astype(np.int64)
        if self.seg_key not in d:
            raise DataError("no pseudo-label targets: the sample has neither seg/edge nor an instance map")
        return d


class InstanceTargetsd(MapTransform):
    """Ground-truth instance label ``(1, H, W)`` -> ``seg`` / ``edge`` targets (the supervised upper bound)."""

    backend = ["numpy"]

    def __init__(
        self, keys: str = "label", seg_key: str = "seg", edge_key: str = "edge", edge_mode: str = "inner",
        edge_width: int = 1,
    ) -> None:
        super().__init__(keys)
        self.seg_key, self.edge_key, self.edge_mode, self.edge_width = seg_key, edge_key, edge_mode, int(edge_width)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = to_numpy(d[key])
            lab = lab[0] if lab.ndim == 3 else lab
            seg, edge = instances_to_targets(lab, self.edge_mode, self.edge_width)
            d[self.seg_key] = seg[None].astype(np.int64)
            d[self.edge_key] = edge[None].astype(np.int64)
        return d


class COINInstancesd(MapTransform):
    """Network output ``(4, H, W)`` (seg bg/fg, edge no/yes; logits or probabilities) -> instances + confidence.

    Softmax per head (skipped with ``probabilities=True``) -> foreground and edge probabilities -> edge-aware
    :func:`~monai_ext.postprocess.watershed.marker_watershed` -> ``d[keys]`` ``(1, H, W)`` int32 instances and
    ``d[scores_key]`` ``{id: mean foreground probability}``. ``use_edge=False`` ignores the edge head
    (distance-transform watershed, as the public COIN code does at inference).

    Args:
        keys: the prediction key.
        probabilities: the input is already softmax-ed (e.g. by :class:`~monai_ext.engines.coin.COINInferer`).
        fg_threshold, edge_threshold, min_size, marker_erosion, min_marker_size, core_min_distance,
        fallback_min_distance: see :func:`~monai_ext.postprocess.watershed.marker_watershed`.
        use_edge: use the edge head for markers and elevation.
        scores_key: where the per-instance confidence goes.
        fg_key, edge_key: optional keys to keep the two probability maps.
    """

    backend = ["numpy", "torch"]

    def __init__(
        self,
        keys: str = "pred",
        probabilities: bool = False,
        fg_threshold: float = 0.5,
        edge_threshold: float | str = "otsu",
        min_size: int = 16,
        marker_erosion: int = 1,
        min_marker_size: int = 16,
        use_edge: bool = True,
        fallback_min_distance: int = 6,
        core_min_distance: int = 8,
        scores_key: str = "scores",
        fg_key: str | None = None,
        edge_key: str | None = None,
    ) -> None:
        super().__init__(keys)
        self.probabilities = probabilities
        self.kw = {"fg_threshold": fg_threshold, "edge_threshold": edge_threshold, "min_size": min_size,
                   "marker_erosion": marker_erosion, "min_marker_size": min_marker_size,
                   "fallback_min_distance": fallback_min_distance, "core_min_distance": core_min_distance}
        self.use_edge = use_edge
        self.scores_key = scores_key
        self.fg_key, self.edge_key = fg_key, edge_key

    def probabilities_of(self, pred: Any) -> tuple[np.ndarray, np.ndarray]:
        """Foreground and edge probability maps ``(H, W)`` of one prediction ``(4, H, W)``."""
        t = torch.as_tensor(to_numpy(pred) if not isinstance(pred, torch.Tensor) else pred.detach()).float()
        if t.ndim != 3 or t.shape[0] != 4:
            raise DataError(f"COIN prediction must be (4, H, W) (seg + edge heads), got {tuple(t.shape)}")
        if not self.probabilities:
            t = torch.cat([t[:2].softmax(0), t[2:].softmax(0)], 0)
        return t[1].cpu().numpy(), t[3].cpu().numpy()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            fg, edge = self.probabilities_of(d[key])
            inst = marker_watershed(fg, edge if self.use_edge else None, **self.kw)
            d[key] = torch.as_tensor(inst[None].astype(np.int32))
            d[self.scores_key] = instance_confidence(inst, fg)
            if self.fg_key:
                d[self.fg_key] = fg[None]
            if self.edge_key:
                d[self.edge_key] = edge[None]
        return d


HEDChannelD = HEDChannelDict = HEDChanneld
RandHEDJitterD = RandHEDJitterDict = RandHEDJitterd
PseudoTargetsD = PseudoTargetsDict = PseudoTargetsd
InstanceTargetsD = InstanceTargetsDict = InstanceTargetsd
COINInstancesD = COINInstancesDict = COINInstancesd
