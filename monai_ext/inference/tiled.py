# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Instance segmentation of arbitrarily large 2D images with memory bounded by the tile size.

The image is processed in bands of tiles. Each tile is predicted with a context ``margin`` on every side; an
instance is kept by the tile whose *core* (the tile without margins, a partition of the image) contains its
centroid, so every object is predicted whole by exactly one tile as long as objects are smaller than the
margin, and ids never clash (a running offset). Pixels claimed by two kept objects go to the first one
painted. Finished rows are written to an uncompressed tif memory map that is unmapped after every band, and
the input is read the same way, so the resident memory is a few bands, whatever the image size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage

from monai_ext.errors import DataError
from monai_ext.utils import progress

__all__ = ["TiledResult", "tiled_instance_segmentation", "keep_core_instances"]

Predictor = Callable[[np.ndarray], "tuple[np.ndarray, dict[int, float] | None]"]


@dataclass
class TiledResult:
    """Output of :func:`tiled_instance_segmentation`."""

    labels: np.ndarray | Path
    scores: dict[int, float] = field(default_factory=dict)
    num_instances: int = 0
    tiles: int = 0


def keep_core_instances(
    labels: np.ndarray, core: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of ``labels`` whose centroid lies in ``core`` (vectorised with bincount) and the relabelled map.

    Returns:
        ``(kept_ids, mapped)`` where ``mapped`` holds ``0`` for dropped objects and ``1..K`` for kept ones,
        numbered in the order of ``kept_ids``.
    """
    flat = labels.ravel().astype(np.int64)
    if flat.size == 0 or flat.max() <= 0:
        return np.zeros(0, np.int64), np.zeros_like(labels, dtype=np.int64)
    n = int(flat.max()) + 1
    rows, cols = np.indices(labels.shape)
    area = np.bincount(flat, minlength=n).astype(float)
    cy = np.bincount(flat, rows.ravel(), minlength=n) / np.maximum(area, 1)
    cx = np.bincount(flat, cols.ravel(), minlength=n) / np.maximum(area, 1)
    ids = np.arange(n)
    inside = (
        (area > 0) & (ids > 0)
        & (cy >= core[0].start) & (cy < core[0].stop)
        & (cx >= core[1].start) & (cx < core[1].stop)
    )
    kept = ids[inside]
    lut = np.zeros(n, dtype=np.int64)
    lut[kept] = np.arange(1, kept.size + 1)
    return kept, lut[labels.astype(np.int64)]


def _open_input(image: Any) -> tuple[Callable[[], Any], tuple[int, ...]]:
    """A re-openable view of the input: arrays as they are, tif paths as memory maps (uncompressed only)."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise DataError("image file does not exist", path)
        try:
            probe = tifffile.memmap(path, mode="r")
        except Exception as exc:  # compressed or tiled: cannot be memory mapped
            raise DataError(
                f"tiled inference needs an uncompressed, contiguous tif that can be memory-mapped ({exc}); "
                "re-save it uncompressed (e.g. tifffile.imwrite(path, image))",
                path,
            ) from exc
        shape = probe.shape
        del probe
        return (lambda: tifffile.memmap(path, mode="r")), shape
    arr = np.asarray(image) if not isinstance(image, np.ndarray) else image
    return (lambda: arr), arr.shape


def tiled_instance_segmentation(
    image: Any,
    predict: Predictor,
    tile: int = 1024,
    margin: int = 128,
    output: str | os.PathLike | None = None,
    channel_axis: int | None = -1,
    dtype: Any = np.int32,
) -> TiledResult:
    """Segment a large 2D image tile by tile into one instance label image with consistent ids.

    Args:
        image: ``(H, W)``, ``(H, W, C)`` (``channel_axis=-1``) or ``(C, H, W)`` (``channel_axis=0``) array, or
            the path of an uncompressed tif (read through a memory map).
        predict: maps a window in the input's layout to ``(labels (h, w) int, {id: score} or None)``; ids are
            local to the window.
        tile: core tile size (pixels).
        margin: context on each side; must exceed the largest object's extent for whole objects.
        output: tif path to write (memory-mapped, bounded memory); ``None`` returns an in-memory array.
        channel_axis: where the channels are (``None`` for 2D grey images).
        dtype: output label dtype.

    Returns:
        :class:`TiledResult` with ``labels`` (array, or the output path) and global ``{id: score}``.
    """
    if tile < 16 or margin < 0:
        raise ValueError(f"tile must be >= 16 and margin >= 0, got tile={tile}, margin={margin}")
    opener, shape = _open_input(image)
    if channel_axis is None:
        if len(shape) != 2:
            raise DataError(f"expected a 2D image, got shape {shape}")
        height, width = shape
    else:
        if len(shape) != 3:
            raise DataError(f"expected a 3D (channels + 2D) image, got shape {shape}")
        spatial = [s for i, s in enumerate(shape) if i != channel_axis % 3]
        height, width = spatial

    def window(arr: Any, ys: slice, xs: slice) -> np.ndarray:
        if channel_axis is None:
            return np.array(arr[ys, xs])
        if channel_axis % 3 == 0:
            return np.array(arr[:, ys, xs])
        return np.array(arr[ys, xs, :])

    out_path = Path(output) if output is not None else None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(out_path, shape=(height, width), dtype=dtype)  # allocates an uncompressed file
        result_labels: np.ndarray | Path = out_path
    else:
        result_labels = np.zeros((height, width), dtype=dtype)

    scores: dict[int, float] = {}
    next_id = 1
    n_tiles = 0
    # rolling buffer of output rows [buf_top, buf_top + buf.shape[0])
    buf_top = 0
    buf = np.zeros((0, width), dtype=dtype)

    def flush(upto: int) -> None:
        nonlocal buf, buf_top
        upto = min(upto, height)
        if upto <= buf_top:
            return
        rows = upto - buf_top
        if out_path is not None:
            mm = tifffile.memmap(out_path, mode="r+")
            mm[buf_top:upto] = buf[:rows]
            mm.flush()
            del mm
        else:
            result_labels[buf_top:upto] = buf[:rows]
        buf = buf[rows:]
        buf_top = upto

    for r0 in progress(range(0, height, tile), "tiled inference", unit="tile row"):
        r1 = min(r0 + tile, height)
        y0, y1 = max(r0 - margin, 0), min(r1 + margin, height)
        need = y1 - buf_top
        if buf.shape[0] < need:
            buf = np.concatenate([buf, np.zeros((need - buf.shape[0], width), dtype=dtype)])
        arr = opener()
        for c0 in range(0, width, tile):
            c1 = min(c0 + tile, width)
            x0, x1 = max(c0 - margin, 0), min(c1 + margin, width)
            win = window(arr, slice(y0, y1), slice(x0, x1))
            labels, local_scores = predict(win)
            labels = np.asarray(labels)
            if labels.shape != (y1 - y0, x1 - x0):
                raise ValueError(f"predict returned labels of shape {labels.shape} for a window of {(y1 - y0, x1 - x0)}")
            kept, mapped = keep_core_instances(labels, (slice(r0 - y0, r1 - y0), slice(c0 - x0, c1 - x0)))
            n_tiles += 1
            if kept.size == 0:
                continue
            region = buf[y0 - buf_top : y1 - buf_top, x0:x1]
            paint = (mapped > 0) & (region == 0)
            region[paint] = (mapped[paint] + (next_id - 1)).astype(dtype)
            if local_scores:
                for k, old in enumerate(kept.tolist()):
                    if old in local_scores:
                        scores[next_id + k] = float(local_scores[old])
            next_id += int(kept.size)
        del arr
        # rows above r1 - margin can no longer be painted by later bands (their centroids lie below r1)
        flush(r1 - margin if r1 < height else height)
    flush(height)
    if np.iinfo(dtype).max < next_id - 1:
        raise OverflowError(f"{next_id - 1} instances do not fit in {np.dtype(dtype)}")
    return TiledResult(labels=result_labels, scores=scores, num_instances=next_id - 1, tiles=n_tiles)
