# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""EM volumes (Lucchi/EPFL, VNC III, MitoEM-R/H): tif stacks, h5 datasets or folders of 2D slices, with instance
or binary labels (source domain) or sparse point files (target domain); served as 2D slices or 3D volumes / patches.

Volumes found under the root (recursively) without configuration:

- ``<name>.tif|.h5`` with ``<name>_<label>.tif|.h5`` next to it, ``<label>`` one of ``groundtruth``, ``gt``,
  ``label(s)``, ``mask(s)``, ``seg``, ``segmentation``, ``instance(s)`` (Lucchi: ``training.tif`` +
  ``training_groundtruth.tif``);
- an h5 file holding both an image key and a label key (``raw`` + ``label``...);
- folders of 2D slices: ``<name>/`` with ``<name>_<label>/``, or, inside one parent, one image folder named ``raw``,
  ``im``, ``image(s)``, ``img`` or ``slices`` and one label folder named ``mitochondria``, ``mito``, ``label(s)``,
  ``gt``, ``groundtruth`` or ``seg`` (VNC III: ``stack1/raw/`` + ``stack1/mitochondria/``; the volume is named after
  the parent);
- point files ``<name>_points.csv|.json`` ((z, y, x) rows, see :func:`~monai_ext.data.readers.files.read_points`) or a
  folder ``<name>_points/`` of per-slice PNGs with non-zero pixels at the points;
- image volumes without a label or points are kept (unlabelled target / test data).

Anything else (e.g. MitoEM's ``im/`` slices with ``mito_train/`` labels that cover only slices 0-399) is given with
``volumes=[{"image": "im", "label": "mito_train", "image_z": [0, 400], "split": "train"}, ...]`` (paths relative to
the root; optional ``points``, ``image_key``, ``label_key``, ``label_z``, ``name``, ``domain``). The split comes from
folder / file names (``training``, ``test``...) unless given.

Labels: ``label_type="auto"`` treats bool or uint8 {0, 255} / {0, 1} volumes (Lucchi, VNC) as binary and turns them
into **connected components** (face connectivity) of the loaded slice (2D mode) or volume / patch (3D mode), so
instance ids are local to each sample and touching objects merge; integer label volumes (MitoEM) keep their ids.
Reading is lazy: one tif page, one h5 hyperslab or one slice file per 2D record, only the patch for 3D patches.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import FolderScan, Reader, image_files
from .files import (
    IMAGE_EXTS,
    as_instance_label,
    check_points,
    image_header,
    infer_split,
    read_array,
    read_points,
    scale_image,
)

__all__ = ["EMReader", "Volume", "open_volume"]

logger = logging.getLogger(__name__)

VOLUME_EXTS = (".tif", ".tiff", ".h5", ".hdf5", ".hdf")
H5_EXTS = (".h5", ".hdf5", ".hdf")
_LABEL_WORDS = "groundtruth|ground_truth|gt|label|labels|mask|masks|seg|segmentation|instance|instances"
_LABEL_RE = re.compile(rf"^(?P<base>.+?)[_-](?:{_LABEL_WORDS})$", re.IGNORECASE)
_POINTS_RE = re.compile(r"^(?P<base>.+?)[_-](?:points?|pts|centers|centres)$", re.IGNORECASE)
_IMAGE_DIR_NAMES = {"raw", "im", "image", "images", "img", "slices"}
_LABEL_DIR_NAMES = {"mitochondria", "mito", "label", "labels", "gt", "groundtruth", "seg"}
_IMAGE_KEYS = ("raw", "image", "images", "volume", "data", "im", "main")
_LABEL_KEYS = ("label", "labels", "gt", "groundtruth", "seg", "segmentation", "instances", "main")


# ---------------------------------------------------------------------------------------------------- volumes
class Volume:
    """Lazy ``(D, H, W)`` view of a tif stack, an h5 dataset or a folder of 2D slices (optionally a z-range of it).

    Args:
        path: tif / h5 file or slice folder.
        key: h5 dataset name (``None``: the only dataset, else the first of ``candidates`` present).
        z_range: ``(start, stop)`` slices to expose.
        candidates: h5 keys to try when ``key`` is None.
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None, z_range: Sequence[int] | None = None,
                 candidates: Sequence[str] = _IMAGE_KEYS) -> None:
        self.path = Path(path)
        self.key = key
        if not self.path.exists():
            raise DataError("volume does not exist", self.path)
        if self.path.is_dir():
            self.kind = "slices"
            self.files = image_files(self.path)
            if not self.files:
                raise DataError("slice folder has no image files", self.path)
            shapes = {}
            for f in self.files:  # headers only
                shapes.setdefault(image_header(f), f)
            if len(shapes) > 1:
                (s0, f0), (s1, f1) = list(shapes.items())[:2]
                raise DataError(f"slices differ in shape/dtype: {f0.name} is {s0[0]} {s0[1]}, {f1.name} is {s1[0]} "
                                f"{s1[1]}", self.path)
            (shape2d, dtype), = shapes.keys()
            if len(shape2d) != 2:
                raise DataError(f"slices must be single-channel 2D images, got shape {shape2d}", self.files[0])
            full = (len(self.files),) + tuple(shape2d)
        elif self.path.suffix.lower() in H5_EXTS:
            self.kind = "h5"
            full, dtype = self._h5_header(candidates)
        elif self.path.suffix.lower() in (".tif", ".tiff"):
            self.kind = "tif"
            full, dtype = self._tif_header()
        else:
            raise DataError(f"unsupported volume type {self.path.suffix!r} (tif, h5 or a folder of slices)", self.path)
        self.dtype = np.dtype(dtype)
        self._full_depth = int(full[0])
        self.full_shape: tuple[int, int, int] = (int(full[0]), int(full[1]), int(full[2]))
        z0, z1 = (0, full[0]) if z_range is None else (int(z_range[0]), int(z_range[1]))
        if not 0 <= z0 < z1 <= full[0]:
            raise DataError(f"z range [{z0}, {z1}) is outside the volume's {full[0]} slices", self.path)
        self.z0 = z0
        self.shape: tuple[int, int, int] = (z1 - z0, int(full[1]), int(full[2]))

    def _h5_header(self, candidates: Sequence[str]) -> tuple[tuple[int, ...], Any]:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                keys: list[str] = []
                f.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
                if self.key is None:
                    if len(keys) == 1:
                        self.key = keys[0]
                    else:
                        self.key = next((k for k in candidates if k in keys), None)
                    if self.key is None:
                        raise DataError(f"cannot tell which h5 dataset to use among {keys}; pass the key "
                                        "(image_key / label_key)", self.path)
                if self.key not in f or not isinstance(f[self.key], h5py.Dataset):
                    raise DataError(f"h5 dataset {self.key!r} not found (datasets: {keys})", self.path)
                ds = f[self.key]
                shape, dtype = tuple(ds.shape), ds.dtype
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt / truncated h5
            raise DataError(f"unreadable h5 file ({type(exc).__name__}: {exc})", self.path) from exc
        return self._as3d(shape), dtype

    def _tif_header(self) -> tuple[tuple[int, ...], Any]:
        import tifffile

        if self.path.stat().st_size == 0:
            raise DataError("file is empty (0 bytes)", self.path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                shape, dtype, axes = tuple(series.shape), series.dtype, series.axes
                self._n_pages = len(series.pages)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"unreadable or corrupt tif ({type(exc).__name__}: {exc})", self.path) from exc
        if axes.endswith("S") and shape[-1] in (3, 4):
            raise DataError(f"expected a grayscale stack, got a colour image of shape {shape}", self.path)
        return self._as3d(shape), dtype

    def _as3d(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) == 2:
            return (1,) + shape
        if len(shape) == 4 and shape[-1] == 1:
            return shape[:3]
        if len(shape) != 3:
            raise DataError(f"expected a (D, H, W) volume or a 2D image, got shape {shape}", self.path)
        if 0 in shape:
            raise DataError(f"volume has no voxels (shape {shape})", self.path)
        return shape

    def read(self, z0: int, z1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Slices ``[z0, z1)`` (relative to the view) cropped to ``ys``, ``xs``: ``(z1 - z0, h, w)``."""
        a, b = self.z0 + z0, self.z0 + z1
        try:
            if self.kind == "h5":
                import h5py

                with h5py.File(self.path, "r") as f:
                    ds = f[self.key]
                    arr = ds[a:b, ys, xs] if ds.ndim >= 3 else ds[ys, xs][None]
                    arr = arr.reshape(arr.shape[:3])
            elif self.kind == "tif":
                import tifffile

                if self._n_pages == self._full_depth:  # one page per slice: read only the pages asked for
                    arr = tifffile.imread(self.path, key=range(a, b)).reshape(b - a, *self.shape[1:])
                else:
                    arr = tifffile.imread(self.path).reshape(-1, *self.shape[1:])[a:b]
                arr = arr[:, ys, xs]
            else:
                arr = np.stack([self._slice(f) for f in self.files[a:b]])[:, ys, xs]
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated data surfaces at read time
            raise DataError(f"cannot read slices [{a}, {b}) ({type(exc).__name__}: {exc})", self.path) from exc
        return np.asarray(arr)

    def _slice(self, f: Path) -> np.ndarray:
        arr = read_array(f)
        if arr.shape != self.shape[1:]:
            raise DataError(f"slice has shape {arr.shape}, expected {self.shape[1:]}", f)
        return arr

    def describe(self) -> str:
        return f"{self.path}" + (f"[{self.key}]" if self.key else "")


def open_volume(path: str | os.PathLike, key: str | None = None, z_range: Sequence[int] | None = None,
                label: bool = False) -> Volume:
    """Open a :class:`Volume`, trying label-like h5 keys when ``label`` is set."""
    return Volume(path, key, z_range, _LABEL_KEYS if label else _IMAGE_KEYS)


def _h5_label_key(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"unreadable h5 file ({type(exc).__name__}: {exc})", path) from exc
    img = next((k for k in _IMAGE_KEYS if k in keys and k != "main"), None)
    lab = next((k for k in _LABEL_KEYS if k in keys and k != "main"), None)
    return lab if img is not None else None


# ---------------------------------------------------------------------------------------------------- reader
class EMReader(Reader):
    """EM volume reader (see the module docstring for layouts and policies).

    Args:
        root: dataset folder.
        volumes: explicit volume specs (dicts, paths relative to ``root``) instead of the automatic search.
        mode: ``"2d"`` (one record per slice) or ``"3d"`` (one record per volume, or per patch).
        patch_size: ``(d, h, w)`` to cut 3D volumes into a grid of patches (clamped to the volume).
        patch_stride: grid step (default ``patch_size``); the last patch on each axis is aligned to the end.
        image_key, label_key: h5 dataset names (default: the only dataset, else ``raw``/``image``/... and
            ``label``/``gt``/...).
        label_type: ``"auto"``, ``"instance"`` or ``"binary"``.
        split: default split for ``len`` / indexing.
        allow_empty: keep slices / patches without any instance (default ``True`` for EM).

    Records: ``id`` (``<name>_z0007`` in 2D, ``<name>`` or ``<name>_p0003`` in 3D), ``image``, ``image_key``,
    ``label``, ``label_key``, ``points``, ``name``, ``z`` (2D), ``roi`` ``[z0, z1, y0, y1, x0, x1]`` (3D), ``image_z``,
    ``label_z``, ``domain`` (``"source"`` with labels, else ``"target"``), ``split``.
    Samples: ``image`` (1, H, W) / (1, D, H, W); ``label`` when labelled; ``points`` (N, 2) / (N, 3) when a point
    file exists (possibly empty for a slice without points).
    """

    format = "em"
    dataset = "em"
    default_allow_empty = True

    def __init__(self, root: str | Path, volumes: Sequence[Mapping[str, Any]] | None = None, mode: str = "2d",
                 patch_size: Sequence[int] | None = None, patch_stride: Sequence[int] | None = None,
                 image_key: str | None = None, label_key: str | None = None, label_type: str = "auto",
                 split: str | None = None, allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        if mode not in ("2d", "3d"):
            raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
        self.mode = mode
        self.volumes = None if volumes is None else [dict(v) for v in volumes]
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.patch_stride = None if patch_stride is None else tuple(int(p) for p in patch_stride)
        if self.patch_size is not None and (len(self.patch_size) != 3 or min(self.patch_size) < 1):
            raise ValueError(f"patch_size must be 3 positive ints (d, h, w), got {patch_size}")
        self.image_key, self.label_key, self.label_type = image_key, label_key, label_type
        self._vols: dict[tuple[Any, ...], Volume] = {}
        self._points: dict[tuple[Any, ...], np.ndarray] = {}

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        h5 = [f for f in scan.with_suffix(*H5_EXTS) if not f.name.lower().startswith("cvppp")]
        if h5:
            return True
        tifs = scan.with_suffix(".tif", ".tiff")
        stems = {(f.parent, f.stem) for f in tifs}
        if any((m := _LABEL_RE.match(s)) and (p, m.group("base")) in stems for p, s in stems):
            return True
        names = scan.dir_names()
        if names & _IMAGE_DIR_NAMES and names & _LABEL_DIR_NAMES and not names & {"mask", "masks", "image"}:
            return True
        for f in tifs[:20]:  # multi-page grayscale tifs are volumes
            try:
                shape, _ = image_header(scan.root / f)
            except DataError:
                continue
            if len(shape) == 3 and shape[-1] > 4:
                return True
        return False

    # ---------------------------------------------------------------------------------------- discovery
    def _discover(self) -> list[dict[str, Any]]:
        specs: list[dict[str, Any]] = []
        files, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            dirs.extend(d / n for n in dirnames)
            files.extend(d / n for n in sorted(filenames) if not n.startswith("."))
        slice_dirs = {d for d in dirs if image_files(d) and not any(p.is_dir() for p in d.iterdir())}
        # which slice folders are volumes: named pairs <name>/ + <name>_label/, or raw/ + mitochondria/ siblings
        dir_images: dict[tuple[Path, str], Path] = {}
        dir_labels: dict[tuple[Path, str], Path] = {}
        dir_points: dict[tuple[Path, str], Path] = {}
        for d in sorted(slice_dirs):
            if m := _POINTS_RE.match(d.name):
                dir_points[(d.parent, m.group("base"))] = d
            elif m := _LABEL_RE.match(d.name):
                dir_labels[(d.parent, m.group("base"))] = d
        for d in sorted(slice_dirs):
            if (d.parent, d.name) in dir_labels or (d.parent, d.name) in dir_points:
                dir_images[(d.parent, d.name)] = d
        for parent in sorted({d.parent for d in slice_dirs}):
            kids = [d for d in slice_dirs if d.parent == parent and (parent, d.name) not in dir_images]
            img = [d for d in kids if d.name.lower() in _IMAGE_DIR_NAMES]
            lab = [d for d in kids if d.name.lower() in _LABEL_DIR_NAMES]
            if len(img) == 1 and len(lab) <= 1:
                name = parent.name if parent != self.root else img[0].name
                dir_images[(parent, name)] = img[0]
                if lab:
                    dir_labels[(parent, name)] = lab[0]
            elif len(img) > 1 or len(lab) > 1:
                raise DataError(f"ambiguous slice folders {[d.name for d in img + lab]}; pass volumes=[...]", parent)
        used_dirs = set(dir_images.values()) | set(dir_labels.values()) | set(dir_points.values())
        # volume files
        vol_images: dict[tuple[Path, str], Path] = {}
        vol_labels: dict[tuple[Path, str], Path] = {}
        file_points: dict[tuple[Path, str], Path] = {}
        for f in files:
            if f.parent in used_dirs:
                continue
            suffix = f.suffix.lower()
            if (m := _POINTS_RE.match(f.stem)) and suffix in (".csv", ".json") + IMAGE_EXTS:
                file_points[(f.parent, m.group("base"))] = f
            elif suffix in VOLUME_EXTS:
                if f.name.lower().startswith("cvppp"):
                    continue
                if m := _LABEL_RE.match(f.stem):
                    vol_labels[(f.parent, m.group("base"))] = f
                else:
                    if (f.parent, f.stem) in vol_images:
                        raise DataError(f"two volumes named {f.stem!r}: {vol_images[(f.parent, f.stem)].name} and "
                                        f"{f.name}", f.parent)
                    vol_images[(f.parent, f.stem)] = f
        images = {**vol_images, **dir_images}
        labels = {**vol_labels, **dir_labels}
        points = {**file_points, **dir_points}
        for key, lab in labels.items():
            if key not in images:
                raise DataError(f"missing pair: label volume without an image volume named {key[1]!r}", lab)
        for key, pts in points.items():
            if key not in images:
                raise DataError(f"point file without an image volume named {key[1]!r}", pts)
        for key, img in sorted(images.items()):
            parent, name = key
            spec: dict[str, Any] = {"image": img, "name": name}
            if key in labels:
                spec["label"] = labels[key]
            elif img.suffix.lower() in H5_EXTS and self.label_key is None and (lk := _h5_label_key(img)):
                spec["label"], spec["label_key"] = img, lk
                if self.image_key is None:
                    spec["image_key"] = next(k for k in _IMAGE_KEYS if k != "main" and self._h5_has(img, k))
            if key in points:
                spec["points"] = points[key]
            rel = img.relative_to(self.root)
            spec["split"] = infer_split(rel.parts[:-1] + (Path(rel.parts[-1]).stem,))
            specs.append(spec)
        if not specs:
            raise DataError("no EM volumes found (tif/h5 stacks, slice folders)", self.root)
        return specs

    @staticmethod
    def _h5_has(path: Path, key: str) -> bool:
        import h5py

        with h5py.File(path, "r") as f:
            return key in f

    def _explicit(self) -> list[dict[str, Any]]:
        specs = []
        for k, v in enumerate(self.volumes or []):
            if "image" not in v:
                raise DataError(f"volume spec {k} has no 'image'", self.root)
            spec = dict(v)
            for field in ("image", "label", "points"):
                if spec.get(field):
                    p = Path(spec[field])
                    spec[field] = p if p.is_absolute() else self.root / p
                    if not spec[field].exists():
                        raise DataError(f"volume spec {k}: {field} does not exist", spec[field])
            spec.setdefault("name", Path(spec["image"]).stem)
            specs.append(spec)
        return specs

    # ---------------------------------------------------------------------------------------- records
    def _volume(self, path: str | Path, key: str | None, z_range: Sequence[int] | None, label: bool) -> Volume:
        ck = (str(path), key, None if z_range is None else tuple(z_range), label)
        if ck not in self._vols:
            self._vols[ck] = open_volume(path, key, z_range, label)
        return self._vols[ck]

    def _volume_points(self, record: Mapping[str, Any], vol: Volume) -> np.ndarray:
        """Points of the image view as float32 (N, 3) (z, y, x), z relative to the view.

        Point files give z in the slices of the whole image file (so one file can serve several ``image_z`` views);
        a folder of per-slice PNGs has one file per slice of the whole image file or of the view.
        """
        path = Path(record["points"])
        ck = (str(path), vol.z0, vol.shape[0])
        if ck not in self._points:
            full, depth = vol.full_shape, vol.shape[0]
            if path.is_dir():
                files = image_files(path)
                if len(files) == full[0]:
                    files = files[vol.z0:vol.z0 + depth]
                elif len(files) != depth:
                    raise DataError(f"point folder has {len(files)} slice files but the volume has {depth} slices",
                                    path)
                parts = [np.concatenate([np.full((len(p), 1), z, np.float32), p], axis=1)
                         for z, p in enumerate(read_points(f, ndim=2) for f in files)]
                pts = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
                check_points(pts[:, 1:], full[1:], path)
            else:
                pts = read_points(path)
                if pts.shape[1] == 2:
                    if full[0] != 1:
                        raise DataError(f"2D (y, x) points given for a volume of {full[0]} slices; use (z, y, x)",
                                        path)
                    pts = np.concatenate([np.zeros((len(pts), 1), np.float32), pts], axis=1)
                check_points(pts, full, path)
                pts = pts[(np.rint(pts[:, 0]) >= vol.z0) & (np.rint(pts[:, 0]) < vol.z0 + depth)]
                pts[:, 0] -= vol.z0
            self._points[ck] = pts.astype(np.float32)
        return self._points[ck]

    def _records(self) -> list[dict[str, Any]]:
        specs = self._explicit() if self.volumes is not None else self._discover()
        records: list[dict[str, Any]] = []
        for spec in specs:
            image_key = spec.get("image_key", self.image_key)
            vol = self._volume(spec["image"], image_key, spec.get("image_z"), False)
            if vol.dtype not in (np.uint8, np.uint16) and not np.issubdtype(vol.dtype, np.floating):
                raise DataError(f"unsupported image dtype {vol.dtype} (expected uint8, uint16 or float)", vol.path)
            base = {"name": str(spec["name"]), "image_key": vol.key, "image_z": spec.get("image_z"),
                    "label": None, "label_key": None, "label_z": spec.get("label_z"), "points": None,
                    "domain": spec.get("domain")}
            if spec.get("label"):
                lvol = self._volume(spec["label"], spec.get("label_key", self.label_key), spec.get("label_z"), True)
                if lvol.shape != vol.shape:
                    raise DataError(f"label volume shape {lvol.shape} does not match image volume shape {vol.shape} "
                                    f"({vol.describe()})", lvol.describe())
                if not (np.issubdtype(lvol.dtype, np.integer) or lvol.dtype == np.bool_ or
                        np.issubdtype(lvol.dtype, np.floating)):
                    raise DataError(f"unsupported label dtype {lvol.dtype}", lvol.path)
                base.update(label=str(lvol.path), label_key=lvol.key)
            if spec.get("points"):
                base["points"] = str(spec["points"])
                self._volume_points(base, vol)  # parse and bounds-check now, not at the first load
            if base["domain"] is None:
                base["domain"] = "source" if base["label"] else "target"
            split = spec.get("split")
            for rid, extra in self._cuts(base["name"], vol.shape):
                records.append(self._record(rid, vol.path, split=split, **base, **extra))
        return records

    def _cuts(self, name: str, shape: tuple[int, int, int]) -> list[tuple[str, dict[str, Any]]]:
        if self.mode == "2d":
            return [(f"{name}_z{z:04d}", {"z": z, "roi": None}) for z in range(shape[0])]
        if self.patch_size is None:
            return [(name, {"z": None, "roi": [0, shape[0], 0, shape[1], 0, shape[2]]})]
        size = [min(p, s) for p, s in zip(self.patch_size, shape)]
        stride = self.patch_stride or tuple(size)
        starts = []
        for s, p, st in zip(shape, size, stride):
            pos = list(range(0, s - p + 1, max(int(st), 1)))
            if pos[-1] != s - p:
                pos.append(s - p)
            starts.append(pos)
        out = []
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    roi = [z, z + size[0], y, y + size[1], x, x + size[2]]
                    out.append((f"{name}_p{len(out):04d}", {"z": None, "roi": roi}))
        return out

    # ---------------------------------------------------------------------------------------- loading
    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        vol = self._volume(record["image"], record.get("image_key"), record.get("image_z"), False)
        if record.get("z") is not None:
            z = int(record["z"])
            z0, z1, ys, xs = z, z + 1, slice(None), slice(None)
            origin = np.zeros(2, np.float32)
        else:
            r = record["roi"]
            z0, z1, ys, xs = r[0], r[1], slice(r[2], r[3]), slice(r[4], r[5])
            origin = np.asarray([r[0], r[2], r[4]], np.float32)
        raw = vol.read(z0, z1, ys, xs)
        two_d = record.get("z") is not None
        image = scale_image(raw[0] if two_d else raw, vol.describe())[None]
        sample: dict[str, Any] = {"image": np.ascontiguousarray(image)}
        if record.get("label"):
            lvol = self._volume(record["label"], record.get("label_key"), record.get("label_z"), True)
            lab = lvol.read(z0, z1, ys, xs)
            sample["label"] = as_instance_label(lab[0] if two_d else lab, lvol.describe(), self.label_type,
                                                ndim=2 if two_d else 3)[None]
        if record.get("points"):
            pts = self._volume_points(record, vol)
            if two_d:
                sel = np.rint(pts[:, 0]) == z0
                sample["points"] = pts[sel, 1:].copy()
            else:
                r = record["roi"]
                hi = np.asarray([r[1], r[3], r[5]], np.float32)
                sel = np.all((pts >= origin - 0.5) & (pts < hi - 0.5), axis=1)
                sample["points"] = (pts[sel] - origin).astype(np.float32)
        sample["meta"] = self._meta(record, name=record.get("name"), domain=record.get("domain"), z=record.get("z"),
                                    roi=record.get("roi"), image_key=record.get("image_key"),
                                    points_path=record.get("points"))
        return sample

