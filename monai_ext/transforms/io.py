# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Write predicted instance label images (+ per-instance scores and an overlay) to a folder."""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from monai.transforms import MapTransform

from monai_ext.utils import atomic_write_bytes, to_numpy

__all__ = [
    "SaveInstancesd",
    "SaveInstancesD",
    "SaveInstancesDict",
    "read_prediction",
    "prediction_path",
    "sample_id_of",
]


def sample_id_of(d: Mapping[Hashable, Any], id_key: str = "meta.id") -> str:
    """Look a dotted key (``"meta.id"``) up in a sample dict; the id of the sample."""
    cur: Any = d
    for part in id_key.split("."):
        cur = cur[part]
    if isinstance(cur, (list, tuple)):  # un-decollated single-item batch
        cur = cur[0]
    return str(cur)


def prediction_path(output_dir: str | os.PathLike, sample_id: str) -> Path:
    """``<output_dir>/predictions/<id>.tif``: the file inference writes and evaluation reads."""
    return Path(output_dir) / "predictions" / f"{sample_id}.tif"


def read_prediction(path: str | os.PathLike) -> tuple[np.ndarray, dict[int, float]]:
    """Read an instance label image written by :class:`SaveInstancesd` and its scores (may be empty)."""
    path = Path(path)
    label = tifffile.imread(path)
    scores_path = path.with_name(path.stem + "_scores.json")
    scores: dict[int, float] = {}
    if scores_path.exists():
        scores = {int(k): float(v) for k, v in json.loads(scores_path.read_text()).items()}
    return label, scores


class SaveInstancesd(MapTransform):
    """Save ``d[key]`` (instance labels, ``(1, H, W)`` / ``(1, D, H, W)`` or without channel) as a tif.

    Files: ``<output_dir>/predictions/<id>.tif`` (uint16 when ids fit, else int32, zlib-compressed),
    ``<id>_scores.json`` (``{instance id: confidence}``, from ``d[scores_key]`` if present) and, with
    ``overlay=True``, ``<output_dir>/overlays/<id>.png`` (image with prediction contours, and ground
    truth contours when ``label_key`` is present). All writes are atomic.

    Args:
        keys: the prediction key (one).
        output_dir: destination root.
        scores_key: key holding a ``{id: score}`` mapping or an array indexed by id.
        image_key: image for the overlay.
        label_key: optional ground truth drawn on the overlay.
        overlay: write the overlay PNG.
        id_key: dotted key of the sample id.
    """

    backend = ["numpy"]

    def __init__(
        self,
        keys: str = "pred",
        output_dir: str | os.PathLike = "./eval",
        scores_key: str | None = "scores",
        image_key: str | None = "image",
        label_key: str | None = None,
        overlay: bool = True,
        id_key: str = "meta.id",
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.scores_key = scores_key
        self.image_key = image_key
        self.label_key = label_key
        self.overlay = overlay
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        sid = sample_id_of(d, self.id_key)
        for key in self.key_iterator(d):
            pred = to_numpy(d[key])
            if pred.ndim >= 3 and pred.shape[0] == 1:
                pred = pred[0]
            pred = pred.astype(np.int64)
            dtype = np.uint16 if pred.size == 0 or (pred.min() >= 0 and pred.max() < 2**16) else np.int32
            path = prediction_path(self.output_dir, sid)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tifffile.imwrite(tmp, pred.astype(dtype), compression="zlib")
            os.replace(tmp, path)
            scores = d.get(self.scores_key) if self.scores_key else None
            if scores is not None:
                if not isinstance(scores, Mapping):
                    arr = to_numpy(scores).ravel()
                    ids = np.unique(pred[pred > 0])
                    scores = {int(i): float(arr[i]) for i in ids if i < arr.size}
                payload = {str(int(k)): float(v) for k, v in scores.items()}
                atomic_write_bytes(path.with_name(f"{sid}_scores.json"), json.dumps(payload).encode())
            if self.overlay and self.image_key and self.image_key in d:
                from monai_ext.visualize import save_overlay

                gt = to_numpy(d[self.label_key]) if self.label_key and self.label_key in d else None
                save_overlay(self.output_dir / "overlays" / f"{sid}.png", to_numpy(d[self.image_key]), label=gt, pred=pred)
        return d


SaveInstancesD = SaveInstancesDict = SaveInstancesd
