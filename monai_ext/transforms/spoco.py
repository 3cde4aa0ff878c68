# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""SPOCO data transforms: seeded sparse-instance sampling and the two photometric views of a shared crop.

- :class:`SparseInstancesd` keeps ``round(ratio * N)`` randomly chosen instances of a label image and sets every
  other pixel to 0 (= *unlabelled*, not background; SPOCO ``cvppp_sample_instances``). The choice depends only on
  ``(seed, sample id)``, so the labelled subset is the same in every epoch, on every DDP rank and after a resume.
- :class:`RandPhotometricd` is SPOCO's photometric augmentation (torchvision ``ColorJitter(0.4, 0.4, 0.4, 0.1)``
  with p = 0.5, ``RandomGrayscale`` p = 0.2, Gaussian blur with sigma in [0.1, 2] with p = 0.5) for channel-first
  arrays; saturation, hue and grayscale apply to RGB images only.
- :class:`SpocoViewsd` copies the (already geometrically augmented) image to a second key and applies independent
  photometric draws to both, so the student and the teacher see the same crop with different colours.

The shared geometric part (SPOCO: ``RandomResizedCrop(448, scale=(0.7, 1))`` + flips) is done with MONAI transforms
on ``image``, ``label`` (nearest) and ``fg`` before :class:`SpocoViewsd`; see the bundle's ``train.json``.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from monai_ext.errors import DataError
from monai_ext.transforms.io import sample_id_of
from monai_ext.utils import to_numpy

__all__ = [
    "spoco_reader",
    "sample_instances",
    "SparseInstancesd",
    "SparseInstancesD",
    "SparseInstancesDict",
    "RandPhotometricd",
    "RandPhotometricD",
    "RandPhotometricDict",
    "SpocoViewsd",
    "SpocoViewsD",
    "SpocoViewsDict",
]


def spoco_reader(dataset_format: str | None, dataset_dir: str, load_fg: bool = True, **kwargs: Any) -> Any:
    """The dataset reader of ``dataset_dir`` (``dataset_format`` ``"auto"`` detects it), loading the CVPPP foreground
    masks (``*_fg.png`` / h5 ``fg``) as ``fg`` when the format is CVPPP and ``load_fg`` is set."""
    from monai_ext.data.readers.registry import detect_format, get_reader

    fmt = detect_format(dataset_dir) if dataset_format in (None, "auto") else str(dataset_format).lower()
    if fmt == "cvppp":
        kwargs.setdefault("load_fg", bool(load_fg))
    return get_reader(fmt, dataset_dir, **kwargs)


def sample_instances(label: np.ndarray, ratio: float, rng: np.random.Generator,
                     min_instances: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``max(min_instances, round(ratio * N))`` (at most ``N``) random instances of ``label``, zero the rest.

    Returns ``(sparse label, kept ids)``. Negative ids (ignore) are kept as they are.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"instance ratio must be in [0, 1], got {ratio}")
    ids = np.unique(label[label > 0])
    n_keep = min(ids.size, max(int(min_instances), int(round(ratio * ids.size))))
    kept = np.sort(rng.permutation(ids)[:n_keep]) if n_keep else np.zeros(0, ids.dtype)
    if n_keep == ids.size:
        return label.copy(), kept
    keep = np.isin(label, kept) | (label < 0)
    return np.where(keep, label, 0).astype(label.dtype), kept


class SparseInstancesd(MapTransform):
    """Positive-unlabelled labels: keep a seeded ``ratio`` of the instances in ``d[key]``, the rest become 0.

    Args:
        keys: instance label key(s).
        ratio: fraction of instances kept (SPOCO ``--instance-ratio``; 1.0 keeps all).
        seed: base seed; each sample uses ``crc32(id) ^ seed`` so the subset does not depend on data order.
        min_instances: keep at least this many instances per image (SPOCO: 0, i.e. ``round`` may keep none).
        id_key: dotted key of the sample id.
        kept_key: store the kept ids under this key (``None``: don't).
    """

    backend = ["numpy"]

    def __init__(self, keys: KeysCollection = "label", ratio: float = 0.1, seed: int = 0, min_instances: int = 0,
                 id_key: str = "meta.id", kept_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.min_instances = int(min_instances)
        self.id_key = id_key
        self.kept_key = kept_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        try:
            sid = sample_id_of(d, self.id_key)
        except (KeyError, TypeError) as exc:
            raise DataError(f"SparseInstancesd needs a sample id under {self.id_key!r} to seed the choice") from exc
        for key in self.key_iterator(d):
            lab = to_numpy(d[key])
            if lab.dtype.kind == "f":
                if not np.array_equal(lab, np.round(lab)):
                    raise DataError(f"{sid}: {key} must hold integer instance ids")
                lab = lab.astype(np.int32)
            rng = np.random.default_rng([zlib.crc32(sid.encode()), self.seed & 0xFFFFFFFF])
            if self.ratio >= 1.0 and self.min_instances == 0:
                sparse, kept = lab.copy(), np.unique(lab[lab > 0])
            else:
                sparse, kept = sample_instances(lab, self.ratio, rng, self.min_instances)
            d[key] = sparse
            if self.kept_key:
                d[self.kept_key] = kept
        return d


def _gray(x: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of a ``(3, *spatial)`` RGB image, ``(1, *spatial)``."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def _hue_shift(x: np.ndarray, h: float) -> np.ndarray:
    """Rotate the hue of an RGB image by ``h`` turns (rotation of the chroma plane in YIQ space)."""
    m = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    theta = 2.0 * np.pi * h
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    t = np.linalg.inv(m) @ rot @ m
    return np.tensordot(t.astype(np.float32), x, axes=([1], [0]))


class RandPhotometricd(Randomizable, MapTransform):
    """SPOCO photometric augmentation of channel-first images in [0, 1] (``(C, *spatial)``).

    With probability ``jitter_prob`` a colour jitter in random order: brightness factor in
    ``[1 - brightness, 1 + brightness]``, contrast in ``[1 - contrast, 1 + contrast]`` (blend with the mean luma),
    saturation in ``[1 - saturation, 1 + saturation]`` (blend with the luma) and a hue rotation in
    ``[-hue, hue]`` turns; then grayscale with ``grayscale_prob``; then a Gaussian blur with sigma in
    ``blur_sigma`` with ``blur_prob`` (in-plane only for 3D). Values are clipped to [0, 1].
    """

    backend = ["numpy"]

    def __init__(self, keys: KeysCollection = "image", brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, jitter_prob: float = 0.5, grayscale_prob: float = 0.2,
                 blur_prob: float = 0.5, blur_sigma: Sequence[float] = (0.1, 2.0),
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.jitter_prob, self.grayscale_prob, self.blur_prob = jitter_prob, grayscale_prob, blur_prob
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self._params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        R = self.R
        self._params = {
            "jitter": R.random() < self.jitter_prob,
            "order": R.permutation(4),
            "b": R.uniform(1 - self.brightness, 1 + self.brightness),
            "c": R.uniform(1 - self.contrast, 1 + self.contrast),
            "s": R.uniform(1 - self.saturation, 1 + self.saturation),
            "h": R.uniform(-self.hue, self.hue),
            "gray": R.random() < self.grayscale_prob,
            "blur": R.random() < self.blur_prob,
            "sigma": R.uniform(*self.blur_sigma),
        }

    def apply(self, img: np.ndarray) -> np.ndarray:
        p = self._params
        x = np.asarray(img, np.float32)
        rgb = x.shape[0] == 3
        if p["jitter"]:
            for op in p["order"]:
                if op == 0:
                    x = x * p["b"]
                elif op == 1:
                    mean = (_gray(x) if rgb else x).mean()
                    x = (x - mean) * p["c"] + mean
                elif op == 2 and rgb:
                    g = _gray(x)
                    x = g + (x - g) * p["s"]
                elif op == 3 and rgb:
                    x = _hue_shift(x, p["h"])
                x = np.clip(x, 0.0, 1.0)
        if p["gray"] and rgb:
            x = np.repeat(_gray(x), 3, axis=0)
        if p["blur"]:
            sig = [0.0] + [p["sigma"]] * (x.ndim - 1)
            if x.ndim == 4:
                sig[1] = 0.0  # in-plane only for volumes
            x = ndimage.gaussian_filter(x, sig)
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.randomize()
            out = self.apply(to_numpy(d[key]))
            d[key] = torch.as_tensor(out) if isinstance(d[key], torch.Tensor) else out
        return d


class SpocoViewsd(Randomizable, MapTransform):
    """Two views of one crop: copy ``d[key]`` to ``d[view_key]`` and apply independent photometric draws to both.

    Args:
        keys: the image key (one).
        view_key: the second view's key (the teacher's input).
        **photometric: :class:`RandPhotometricd` arguments.
    """

    backend = ["numpy"]

    def __init__(self, keys: KeysCollection = "image", view_key: str = "image2", allow_missing_keys: bool = False,
                 **photometric: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.view_key = view_key
        self.photometric = RandPhotometricd(keys=keys, **photometric)
        self.photometric.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SpocoViewsd:
        super().set_random_state(seed, state)
        self.photometric.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = to_numpy(d[key])
            self.photometric.randomize()
            v1 = self.photometric.apply(img)
            self.photometric.randomize()
            v2 = self.photometric.apply(img)
            as_t = isinstance(d[key], torch.Tensor)
            d[key] = torch.as_tensor(v1) if as_t else v1
            d[self.view_key] = torch.as_tensor(v2) if as_t else v2
        return d


SparseInstancesD = SparseInstancesDict = SparseInstancesd
RandPhotometricD = RandPhotometricDict = RandPhotometricd
SpocoViewsD = SpocoViewsDict = SpocoViewsd
