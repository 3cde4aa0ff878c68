# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Seeded synthetic generators with exact ground truth, hard enough to separate good from bad methods.

Every generator returns a loaded-sample dict (CONVENTIONS.md): ``image`` float32 channel-first in [0, 1], ``label``
int32 ``(1, H, W)`` / ``(1, D, H, W)`` instance ids, optional ``points`` float32 ``(N, 2)`` (y, x) /
``(N, 3)`` (z, y, x), and ``meta`` (``id``, ``dataset``, ``image_path`` = ``""``, ``seed``, ``kind``,
``n_instances``, ``difficulty``: the knobs used). The same seed always gives the same sample.

- :func:`synth_he_tile` H&E nuclei tiles (COIN); knobs :data:`HE_DEFAULTS`.
- :func:`synth_fluorescence` cytoplasm + nuclei channels, blob-detected points (CKS / LACSS); :data:`FLUO_DEFAULTS`.
- :func:`synth_em` EM mitochondria, ``domain="source" | "target"``, 2D or 3D (WDA); :data:`EM_DEFAULTS`,
  :data:`EM_DOMAINS`.
- :func:`synth_rosette` CVPPP-like leaf rosettes with a foreground mask (SPOCO); :data:`ROSETTE_DEFAULTS`.
- :func:`make_dataset` ``n`` samples of one kind with independent per-sample seeds.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import inside_points, keep_largest_parts, smooth_noise
from .em import EM_DEFAULTS, EM_DOMAINS, sparse_points, synth_em
from .fluorescence import FLUO_DEFAULTS, detect_blobs, instance_centroids, synth_fluorescence
from .he import HE_DEFAULTS, synth_he_tile
from .rosette import ROSETTE_DEFAULTS, synth_rosette

__all__ = [
    "synth_he_tile",
    "synth_fluorescence",
    "synth_em",
    "synth_rosette",
    "make_dataset",
    "sample_seeds",
    "GENERATORS",
    "HE_DEFAULTS",
    "FLUO_DEFAULTS",
    "EM_DEFAULTS",
    "EM_DOMAINS",
    "ROSETTE_DEFAULTS",
    "detect_blobs",
    "instance_centroids",
    "inside_points",
    "sparse_points",
    "keep_largest_parts",
    "smooth_noise",
]

#: Generator per kind; aliases accepted by :func:`make_dataset` are in :data:`KIND_ALIASES`.
GENERATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "he": synth_he_tile,
    "fluorescence": synth_fluorescence,
    "em": synth_em,
    "rosette": synth_rosette,
}

KIND_ALIASES: dict[str, str] = {
    "he": "he",
    "coin": "he",
    "nuclei": "he",
    "fluorescence": "fluorescence",
    "fluo": "fluorescence",
    "points": "fluorescence",
    "cells": "fluorescence",
    "em": "em",
    "mito": "em",
    "rosette": "rosette",
    "leaves": "rosette",
    "spoco": "rosette",
    "cvppp": "rosette",
}


def sample_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds derived from ``seed`` (NumPy ``SeedSequence``)."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(int(n), dtype=np.uint32)]


def make_dataset(
    kind: str, n: int, seed: int = 0, shape: tuple[int, ...] | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """``n`` samples of one kind, each with its own seed (recorded in ``meta["seed"]``), ids ``<kind>_<k:04d>``.

    Args:
        kind: ``"he"``, ``"fluorescence"``, ``"em"`` or ``"rosette"`` (aliases: ``coin``, ``points``, ``mito``,
            ``spoco``, ...).
        n: number of samples.
        seed: dataset seed; sample ``k`` uses ``sample_seeds(seed, n)[k]``, which does not depend on ``n`` (the
            first 4 samples of ``n=4`` and ``n=8`` with the same seed are equal).
        shape: spatial shape passed to the generator (default: the generator's).
        **kwargs: passed to the generator (``domain=`` for EM, ``channels=`` for fluorescence, difficulty knobs).
    """
    key = KIND_ALIASES.get(str(kind).lower())
    if key is None:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {sorted(KIND_ALIASES)}")
    gen = GENERATORS[key]
    if shape is not None:
        kwargs["shape"] = tuple(shape)
    out = []
    for k, s in enumerate(sample_seeds(seed, n)):  # one call per sample
        d = gen(s, **kwargs)
        d["meta"]["id"] = f"{key}{'_' + kwargs['domain'] if key == 'em' and 'domain' in kwargs else ''}_{k:04d}"
        out.append(d)
    return out
