# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Common base of the dataset readers, folder helpers and the seeded datalist split.

A reader is built on a dataset folder, lists cheap validated *records* (paths, ids, format; no pixels) with
:meth:`Reader.datalist`, and turns one record into a loaded sample (see ``docs/CONVENTIONS.md``) with
:meth:`Reader.load`. Records are plain JSON-serialisable dicts, so they can go straight into a MONAI ``Dataset``::

    reader = get_reader("monuseg", root)
    ds = Dataset(data=reader.datalist("train"), transform=Compose([LoadRecordd(reader), ...]))

(``LoadRecordd`` lives in :mod:`.transforms`.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import DataError
from .files import IMAGE_EXTS, check_points, infer_split, natural_key

__all__ = ["Reader", "split_datalist", "FolderScan", "pair_by_stem", "image_files"]


class FolderScan:
    """One walk over a dataset folder (files and folders relative to the root), shared by format detection."""

    def __init__(self, root: str | os.PathLike, max_depth: int = 5, max_entries: int = 200_000) -> None:
        self.root = Path(root)
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        base_depth = len(self.root.parts)
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            depth = len(d.parts) - base_depth
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            if depth >= max_depth:
                dirnames[:] = []
            rel = d.relative_to(self.root)
            self.dirs.extend(rel / n for n in dirnames)
            self.files.extend(rel / n for n in sorted(filenames) if not n.startswith("."))
            if len(self.files) > max_entries:
                break

    def with_suffix(self, *suffixes: str) -> list[Path]:
        """Files whose (lower-cased) suffix is one of ``suffixes``."""
        return [f for f in self.files if f.suffix.lower() in suffixes]

    def dir_names(self) -> set[str]:
        return {d.name for d in self.dirs}


class Reader:
    """Base of the per-format readers.

    Args:
        root: dataset folder.
        split: default split for ``len(reader)`` / ``reader[i]`` (``None``: all records).
        allow_empty: keep zero-instance images (label with no id > 0) instead of raising :class:`DataError`.

    Subclasses set ``format``/``dataset`` and implement :meth:`_records` (all records, each with ``id``, ``format``,
    ``split``, ``image`` and format-specific fields) and :meth:`_load` (record -> sample); the base validates both.
    """

    format: ClassVar[str] = ""
    dataset: ClassVar[str] = ""
    default_allow_empty: ClassVar[bool] = False

    def __init__(
        self, root: str | os.PathLike, split: str | None = None, allow_empty: bool | None = None
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DataError("dataset folder does not exist", self.root)
        if not self.root.is_dir():
            raise DataError("dataset root is not a folder", self.root)
        self.split = split
        self.allow_empty = self.default_allow_empty if allow_empty is None else bool(allow_empty)
        self._all: list[dict[str, Any]] | None = None
        self._default: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------------------------------ to implement
    def _records(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        """Whether a folder looks like this format (used by :func:`detect_format`)."""
        return False

    # ------------------------------------------------------------------------------------------ public API
    def datalist(self, split: str | None = None) -> list[dict[str, Any]]:
        """Validated records of ``split`` (``None``: every record), sorted by id.

        Raises:
            DataError: empty folder, unknown split, duplicate ids, or any format-specific problem (missing pair,
                malformed annotation file...).
        """
        if self._all is None:
            records = self._records()
            if not records:
                raise DataError(f"no {self.dataset or self.format} samples found", self.root)
            seen: dict[str, Any] = {}
            for r in records:
                if r["id"] in seen:
                    raise DataError(f"duplicate sample id {r['id']!r}: {seen[r['id']]} and {r['image']}", self.root)
                seen[r["id"]] = r["image"]
            self._all = sorted(records, key=lambda r: natural_key(str(r["id"])))
        if split is None:
            return [dict(r) for r in self._all]
        out = [dict(r) for r in self._all if r.get("split") == split]
        if not out:
            have = sorted({str(r.get("split")) for r in self._all})
            raise DataError(f"no samples for split {split!r} (splits found: {', '.join(have)})", self.root)
        return out

    def splits(self) -> list[str]:
        """Split names present in the folder (``"None"`` stands for records without a split)."""
        return sorted({str(r.get("split")) for r in self.datalist()})

    def load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Load one record into a sample dict (``image``, ``label`` and/or ``points``, ``meta``) and validate it.

        Raises:
            DataError: unreadable files, wrong dtype / channels / shape, label-image shape mismatch, NaN/inf
                pixels, points outside the image, zero-instance label (unless ``allow_empty``).
        """
        sample = self._load(record)
        self._validate(sample, record)
        return sample

    def __len__(self) -> int:
        return len(self._records_default())

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load(self._records_default()[index])

    def _records_default(self) -> list[dict[str, Any]]:
        if self._default is None:
            self._default = self.datalist(self.split)
        return self._default

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={os.fspath(self.root)!r}, split={self.split!r})"

    # ------------------------------------------------------------------------------------------ helpers
    def _record(self, rid: str, image: str | os.PathLike, split: str | None = None, **extra: Any) -> dict[str, Any]:
        if split is None:
            try:
                split = infer_split(Path(image).relative_to(self.root).parts[:-1])
            except ValueError:
                split = None
        return {"id": str(rid), "format": self.format, "root": os.fspath(self.root), "split": split,
                "image": os.fspath(image), **extra}

    def _meta(self, record: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        meta = {"id": record["id"], "dataset": self.dataset or self.format, "format": self.format,
                "image_path": record["image"], "split": record.get("split")}
        if record.get("label"):
            meta["label_path"] = record["label"]
        meta.update(extra)
        return {k: v for k, v in meta.items() if v is not None}  # None does not collate

    def _validate(self, sample: dict[str, Any], record: Mapping[str, Any]) -> None:
        image = sample["image"]
        path = record.get("image")
        if image.dtype != np.float32 or image.ndim not in (3, 4):
            raise DataError(f"internal: image must be float32 (C, H, W[, D]), got {image.dtype} {image.shape}", path)
        spatial = image.shape[1:]
        label = sample.get("label")
        if label is not None:
            lpath = record.get("label") or path
            if label.ndim != image.ndim or label.shape[0] != 1:
                raise DataError(f"label shape {label.shape} is not (1, *spatial)", lpath)
            if label.shape[1:] != spatial:
                raise DataError(f"label shape {tuple(label.shape[1:])} does not match image shape {spatial} "
                                f"({path})", lpath)
            if not self.allow_empty and not (label > 0).any():
                raise DataError("label has no instances (zero-instance image); pass allow_empty=True to keep such "
                                "images", lpath)
        points = sample.get("points")
        if points is not None:
            ppath = record.get("points") or record.get("annotation") or path
            if points.ndim != 2 or points.shape[1] != len(spatial):
                raise DataError(f"points of shape {points.shape} do not fit a {len(spatial)}D image", ppath)
            sample["points"] = check_points(points, spatial, ppath)


def split_datalist(
    records: Sequence[Mapping[str, Any]], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded random train/validation split of a datalist.

    Args:
        val_fraction: share of records for validation in [0, 1); at least one when > 0 and there are >= 2 records.
        seed: seed of the permutation (same seed, same split).

    Returns:
        ``(train_records, val_records)``, each in the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(records)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [dict(r) for i, r in enumerate(records) if i not in val_idx]
    val = [dict(r) for i, r in enumerate(records) if i in val_idx]
    return train, val


def pair_by_stem(
    images: Sequence[Path], labels: Sequence[Path], where: Path, suffixes: Sequence[str] = ("",)
) -> dict[str, tuple[Path, Path | None]]:
    """Match image and label files by stem (label stem = image stem + one of ``suffixes``).

    Raises:
        DataError: two files with one stem, or a label without an image.
    """
    def index(files: Sequence[Path], what: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in files:
            if f.stem in out:
                raise DataError(f"two {what} files with the stem {f.stem!r}: {out[f.stem].name} and {f.name}",
                                f.parent)
            out[f.stem] = f
        return out

    imgs, labs = index(images, "image"), index(labels, "label")
    pairs: dict[str, tuple[Path, Path | None]] = {}
    used: set[str] = set()
    for stem, img in imgs.items():
        match = next((labs[stem + s] for s in suffixes if stem + s in labs), None)
        if match is not None:
            used.add(match.stem)
        pairs[stem] = (img, match)
    orphans = sorted(set(labs) - used)
    if orphans:
        raise DataError(f"label file {labs[orphans[0]].name} has no matching image ({len(orphans)} orphan label(s))",
                        labs[orphans[0]])
    return pairs


def image_files(folder: Path, exts: Sequence[str] = IMAGE_EXTS) -> list[Path]:
    """Image files directly inside ``folder``, naturally sorted."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts
                   and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
