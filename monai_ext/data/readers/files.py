# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Low-level file reading and validation shared by every reader.

Every function here raises :class:`~monai_ext.errors.DataError` naming the file and the problem: unreadable or
truncated files, unsupported dtypes, wrong channel counts, non-finite pixels, non-integer labels, points outside the
image. Images come back in the loaded-sample contract (``float32``, channel-first, scaled to [0, 1] by the dtype
range), labels as ``int32`` instance maps.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError

__all__ = [
    "IMAGE_EXTS",
    "natural_key",
    "read_array",
    "image_header",
    "to_channel_first",
    "scale_image",
    "load_image",
    "as_instance_label",
    "load_label",
    "binary_to_instances",
    "paint_instances",
    "centroids",
    "read_points",
    "check_points",
    "infer_split",
]

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MAX_BYTES = 1 << 34  # 16 GiB: a 2D image file claiming more has a corrupt header
TIFF_EXTS = (".tif", ".tiff")
_SPLIT_WORDS = {
    "train": "train", "training": "train", "trainval": "train", "train_val": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


def natural_key(name: str | os.PathLike) -> list[Any]:
    """Sort key that orders ``im2`` before ``im10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", os.fspath(name))]


def infer_split(parts: Sequence[str]) -> str | None:
    """Split name from path components (``train``/``training``/``val``/``test``/``testing``...), innermost first.

    Also recognises the MoNuSeg folder names ("MoNuSeg 2018 Training Data", "MoNuSegTestData").
    """
    for part in reversed(list(parts)):
        low = part.lower()
        if low in _SPLIT_WORDS:
            return _SPLIT_WORDS[low]
        words = re.split(r"[^a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", part).lower())
        for w in words:
            if w in _SPLIT_WORDS:
                return _SPLIT_WORDS[w]
        if "testdata" in low:
            return "test"
    return None


# --------------------------------------------------------------------------------------------------- raw arrays
def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file does not exist", path)
    if not path.is_file():
        raise DataError("not a file", path)
    if path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", path)


def read_array(path: str | os.PathLike, key: int | range | None = None, channels_last: bool = False) -> np.ndarray:
    """Read an image file as stored (tif via tifffile, others via Pillow; palette PNGs give their indices).

    Args:
        key: tif page(s) to read (all by default).
        channels_last: return 2D images as ``(H, W)`` or ``(H, W, C)``: a tif stored as a few (<= 4) single-channel
            pages (ImageJ channels) gets its page axis moved last; a tif stack of more pages raises.

    Raises:
        DataError: missing, empty, truncated, corrupt or unsupported file.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_EXTS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes = series.axes
                if int(np.prod(series.shape, dtype=np.float64)) * series.dtype.itemsize > MAX_BYTES:
                    raise DataError(f"implausibly large image {series.shape} {series.dtype} (corrupt header?)", path)
                arr = tif.asarray(key=key)
            if channels_last and arr.ndim == 3 and not axes.endswith("S"):
                if arr.shape[0] > 4:
                    raise DataError(f"tif holds a stack of {arr.shape[0]} pages of {arr.shape[1:]} pixels; expected "
                                    "a 2D image", path)
                arr = np.moveaxis(arr, 0, -1)
        elif suffix in IMAGE_EXTS:
            from PIL import Image

            with Image.open(path) as im:
                im.load()  # forces decoding: truncated files raise here
                if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGB")
                arr = np.array(im)
        else:
            raise DataError(f"unsupported image file type {suffix!r} (expected one of {', '.join(IMAGE_EXTS)})", path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise DataError(f"unreadable or corrupt image file ({type(exc).__name__}: {exc})", path) from exc
    arr = np.asarray(arr)
    if arr.size == 0:
        raise DataError(f"image has no pixels (shape {arr.shape})", path)
    return arr


def image_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an image file without decoding its pixels (tif series / Pillow header)."""
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_EXTS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return tuple(int(s) for s in series.shape), np.dtype(series.dtype)
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
        bands = {"1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "LA": 2, "RGB": 3, "RGBA": 4}
        dtypes = {"1": np.bool_, "I": np.int32, "F": np.float32, "I;16": np.uint16, "I;16B": np.uint16}
        c = bands.get(mode, 3)
        return ((h, w) if c == 1 else (h, w, c)), np.dtype(dtypes.get(mode, np.uint8))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"unreadable or corrupt image file ({type(exc).__name__}: {exc})", path) from exc


# ------------------------------------------------------------------------------------------------------- images
def to_channel_first(arr: np.ndarray, path: str | os.PathLike | None, channels: int | None = None) -> np.ndarray:
    """``(H, W)`` / ``(H, W, C)`` (channel-last, as image files store them; C <= 4) -> ``(C, H, W)``.

    Args:
        channels: required channel count. ``3`` accepts RGB and drops the alpha of RGBA; ``1`` accepts
            single-channel images and RGB(A) images whose colour channels are identical (grey saved as RGB).

    Raises:
        DataError: wrong number of dimensions or channels.
    """
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        if arr.shape[-1] > 4:
            raise DataError(f"expected a 2D image with at most 4 channels (H, W, C), got shape {arr.shape}", path)
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise DataError(f"expected a 2D image (H, W) or (H, W, C), got shape {arr.shape}", path)
    c = arr.shape[0]
    if channels == 3:
        if c == 4:
            arr = arr[:3]
        elif c != 3:
            raise DataError(f"expected an RGB image (3 channels), got {c} channel(s)", path)
    elif channels == 1 and c != 1:
        if c in (3, 4) and np.array_equal(arr[0], arr[1]) and np.array_equal(arr[0], arr[2]):
            arr = arr[:1]
        else:
            raise DataError(f"expected a single-channel (grayscale) image, got {c} channels", path)
    elif channels is not None and channels not in (1, 3) and c != channels:
        raise DataError(f"expected {channels} channels, got {c}", path)
    return arr


def scale_image(arr: np.ndarray, path: str | os.PathLike | None) -> np.ndarray:
    """Scale to float32 in [0, 1] by dtype range: uint8 / 255, uint16 / 65535, bool as 0/1; float kept if finite.

    Raises:
        DataError: other dtypes (signed or 32-bit integers, complex) or NaN / inf pixels.
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"image contains {int((~np.isfinite(out)).sum())} NaN/inf pixel(s)", path)
        return out
    raise DataError(f"unsupported image dtype {arr.dtype} (expected uint8, uint16 or float)", path)


def load_image(path: str | os.PathLike, channels: int | None = None, arr: np.ndarray | None = None) -> np.ndarray:
    """Read (or take ``arr``) and return a contract image: float32 ``(C, H, W)`` in [0, 1]."""
    arr = read_array(path, channels_last=True) if arr is None else arr
    return np.ascontiguousarray(scale_image(to_channel_first(arr, path, channels), path))


# ------------------------------------------------------------------------------------------------------- labels
def binary_to_instances(mask: np.ndarray) -> np.ndarray:
    """Connected components (face connectivity: 4 in 2D, 6 in 3D) of ``mask > 0`` as int32 ids 1..K."""
    from skimage.measure import label as cc_label

    return cc_label(np.asarray(mask) > 0, connectivity=1).astype(np.int32)


def _is_binary(arr: np.ndarray) -> bool:
    if arr.dtype == np.bool_:
        return True
    if arr.dtype != np.uint8:
        return False
    vals = np.unique(arr)
    return bool(set(vals.tolist()) <= {0, 255} or set(vals.tolist()) <= {0, 1})


def as_instance_label(
    arr: np.ndarray, path: str | os.PathLike | None, label_type: str = "auto", ndim: int = 2
) -> np.ndarray:
    """Validate an id array and return it as int32 ``(H, W)`` (``ndim=2``) or ``(D, H, W)`` (``ndim=3``).

    Args:
        label_type: ``"instance"`` (values are ids; -1 = ignore), ``"binary"`` (foreground -> connected components)
            or ``"auto"``: binary when the array is bool or uint8 holding only {0, 255} or only {0, 1}
            (as in TNBC, Lucchi, VNC masks), instance ids otherwise.

    Raises:
        DataError: wrong shape, non-integer or non-finite values, ids below -1 or beyond int32.
    """
    arr = np.asarray(arr)
    if arr.ndim == ndim + 1 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == ndim + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != ndim:
        raise DataError(f"expected a {ndim}D single-channel label, got shape {arr.shape}", path)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError("label contains NaN/inf values", path)
        if not np.array_equal(arr, np.round(arr)):
            raise DataError(f"label has non-integer values (dtype {arr.dtype}); instance ids must be integers", path)
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"unsupported label dtype {arr.dtype}", path)
    if label_type not in ("auto", "instance", "binary"):
        raise ValueError(f"label_type must be 'auto', 'instance' or 'binary', got {label_type!r}")
    if label_type == "binary" or (label_type == "auto" and _is_binary(arr)):
        return binary_to_instances(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.int32)
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < -1:
            raise DataError(f"label has negative ids (min {lo}); only -1 (ignore) is allowed", path)
        if hi > np.iinfo(np.int32).max:
            raise DataError(f"label ids exceed the int32 range (max {hi})", path)
    return arr.astype(np.int32)


def load_label(
    path: str | os.PathLike, label_type: str = "auto", arr: np.ndarray | None = None
) -> np.ndarray:
    """Read a 2D label image and return a contract label ``(1, H, W)`` int32."""
    arr = read_array(path) if arr is None else arr
    return as_instance_label(arr, path, label_type)[None]


def paint_instances(
    shape: tuple[int, ...],
    rr: np.ndarray,
    cc: np.ndarray,
    owner: np.ndarray,
    ids: np.ndarray,
) -> np.ndarray:
    """Paint pixel lists of (possibly overlapping) instances into one int32 map; the **smaller instance wins**.

    Each pixel goes to the instance with the fewest pixels among those covering it; ties go to the one listed first.
    This keeps small nuclei that sit on top of large ones, and is independent of drawing order.

    Args:
        shape: ``(H, W)``.
        rr, cc: concatenated pixel rows / columns of all instances.
        owner: for each pixel, the index (0..K-1) of the instance it came from.
        ids: ``(K,)`` id of each instance.
    """
    out = np.zeros(shape, np.int32)
    if rr.size == 0:
        return out
    owner = np.asarray(owner, np.int64)
    flat = np.asarray(rr, np.int64) * shape[1] + np.asarray(cc, np.int64)
    # drop duplicate pixels within one instance (multi-part polygons) before counting areas
    pair = np.unique(flat * len(ids) + owner)
    flat, owner = pair // len(ids), pair % len(ids)
    area = np.bincount(owner, minlength=len(ids))
    order = np.lexsort((owner, area[owner], flat))  # by pixel, then area, then instance order
    flat, owner = flat[order], owner[order]
    first = np.ones(flat.size, bool)
    first[1:] = flat[1:] != flat[:-1]
    out.reshape(-1)[flat[first]] = np.asarray(ids, np.int32)[owner[first]]
    return out


def centroids(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean pixel coordinate of each instance (ids > 0) in (y, x) / (z, y, x) pixel-centre coordinates.

    Returns:
        ``(points float32 (N, ndim), ids int32 (N,))`` in ascending id order.
    """
    label = np.asarray(label)
    ids, inverse, counts = np.unique(label.reshape(-1), return_inverse=True, return_counts=True)
    keep = ids > 0
    if not keep.any():
        return np.zeros((0, label.ndim), np.float32), np.zeros((0,), np.int32)
    coords = np.indices(label.shape).reshape(label.ndim, -1)
    sums = np.stack([np.bincount(inverse, weights=c, minlength=ids.size) for c in coords], axis=1)
    pts = sums[keep] / counts[keep, None]
    return pts.astype(np.float32), ids[keep].astype(np.int32)


# ------------------------------------------------------------------------------------------------------- points
_AXES = {"yx": ("y", "x"), "zyx": ("z", "y", "x"), "xy": ("x", "y"), "xyz": ("x", "y", "z")}


def _points_from_rows(rows: np.ndarray, axes: Sequence[str], path: Path) -> np.ndarray:
    want = ["z", "y", "x"] if "z" in axes else ["y", "x"]
    missing = [a for a in want if a not in axes]
    if missing:
        raise DataError(f"points file lacks column(s) {missing} (has {list(axes)})", path)
    idx = [list(axes).index(a) for a in want]
    pts = rows[:, idx] if rows.size else np.zeros((0, len(want)))
    return pts


def read_points(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read a sparse point file into float32 ``(N, 2)`` (y, x) or ``(N, 3)`` (z, y, x).

    Formats (by suffix):
        - ``.png``/``.tif``: 2D image, every non-zero pixel is a point (WDA's "one PNG per image"); a 3D tif gives
          (z, y, x) points.
        - ``.csv``: a header naming the columns (``y,x`` / ``z,y,x`` / ``x,y``; extra columns ignored) or no header
          and 2 / 3 numeric columns taken as (y, x) / (z, y, x).
        - ``.json``: ``[[y, x], ...]`` or ``{"points": [[...], ...], "axes": "yx" | "zyx" | "xy"}``.

    Args:
        ndim: 2 or 3 to require that many coordinates.

    Raises:
        DataError: unreadable file, wrong columns, non-numeric or non-finite coordinates.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTS:
        arr = read_array(path)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and suffix not in TIFF_EXTS:
            arr = arr[..., :3].max(-1)
        pts = np.argwhere(arr != 0).astype(np.float32)
    elif suffix == ".csv":
        _check_file(path)
        try:
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"unreadable csv points file ({exc})", path) from exc
        header = None
        if rows and any(re.search(r"[a-df-zA-DF-Z]", c) for c in rows[0]):
            header = [c.strip().lower() for c in rows[0]]
            rows = rows[1:]
        try:
            vals = np.array([[float(c) for c in r] for r in rows], np.float64)
        except ValueError as exc:
            raise DataError(f"non-numeric coordinate in csv points file ({exc})", path) from exc
        if rows and len({len(r) for r in rows}) != 1:
            raise DataError("csv points file has rows of different lengths", path)
        if header is None:
            ncol = vals.shape[1] if vals.size else (ndim or 2)
            if ncol not in (2, 3):
                raise DataError(f"csv points without a header need 2 (y,x) or 3 (z,y,x) columns, got {ncol}", path)
            header = ["y", "x"] if ncol == 2 else ["z", "y", "x"]
        if vals.size and vals.shape[1] != len(header):
            raise DataError(f"csv header has {len(header)} columns but rows have {vals.shape[1]}", path)
        pts = _points_from_rows(vals.reshape(-1, len(header)), header, path)
    elif suffix == ".json":
        _check_file(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"unreadable json points file ({exc})", path) from exc
        axes: Sequence[str] = ()
        if isinstance(data, dict):
            if "points" not in data:
                raise DataError("json points file is a dict without a 'points' key", path)
            axes = _AXES.get(str(data.get("axes", "")).lower(), ())
            data = data["points"]
        try:
            vals = np.asarray(data, np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"json points are not a list of numeric coordinates ({exc})", path) from exc
        if vals.size == 0:
            vals = vals.reshape(0, len(axes) or ndim or 2)
        if vals.ndim != 2 or vals.shape[1] not in (2, 3):
            raise DataError(f"json points must be a list of [y, x] or [z, y, x], got shape {vals.shape}", path)
        if not axes:
            axes = ("y", "x") if vals.shape[1] == 2 else ("z", "y", "x")
        if len(axes) != vals.shape[1]:
            raise DataError(f"json axes {''.join(axes)!r} do not match {vals.shape[1]} coordinates", path)
        pts = _points_from_rows(vals, axes, path)
    else:
        raise DataError(f"unsupported points file type {suffix!r} (expected png, tif, csv or json)", path)
    pts = np.asarray(pts, np.float32).reshape(-1, pts.shape[1] if pts.ndim == 2 else (ndim or 2))
    if not np.isfinite(pts).all():
        raise DataError("points contain NaN/inf coordinates", path)
    if ndim is not None and pts.shape[1] != ndim:
        raise DataError(f"expected {ndim}D points, got {pts.shape[1]} coordinates per point", path)
    return pts


def check_points(points: np.ndarray, shape: Sequence[int], path: str | os.PathLike | None) -> np.ndarray:
    """Require every point inside the image: ``-0.5 <= coord < size - 0.5`` on every axis (pixel centres).

    Raises:
        DataError: naming the first offending point.
    """
    points = np.asarray(points, np.float32)
    if points.size == 0:
        return points.reshape(0, len(shape))
    if not np.isfinite(points).all():
        raise DataError("points contain NaN/inf coordinates", path)
    size = np.asarray(shape, np.float32)
    bad = np.any((points < -0.5) | (points >= size - 0.5), axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{int(bad.sum())} point(s) outside the image of shape {tuple(shape)}, e.g. point {k} at "
                        f"{points[k].tolist()}", path)
    return points


def log_skip(path: str | os.PathLike, problem: str) -> None:
    """Log a skipped sample (the documented policy for some problems) as a warning naming the file."""
    logger.warning("skipping %s: %s", os.fspath(path), problem)
