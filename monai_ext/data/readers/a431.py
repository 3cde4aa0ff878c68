# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""A431 (LACSS / CKS): point-labelled training images and mask-labelled test images.

Layout (the Mendeley zip)::

    train.json            list of {"image_file", "mask_file"?, "locations": [[y, x], ...], "img_id"?}
    train/...             the files train.json names (paths relative to the json's folder; a bare file name is
                          also looked up in train/)
    test/img_000k.tif     test images
    test/masks_000k.tif   their instance masks

Train samples carry ``points`` (the blob-detection locations, (y, x)) and, when ``mask_file`` is given, a ``label``;
test samples carry a ``label``. Images keep their channel count (1 to 4).

Policies: train entries with no location are skipped with a logged warning (unless ``allow_empty``); a malformed entry,
a missing image / mask file, a duplicate ``image_file``, a test image without its mask (or the reverse) and locations
outside the image raise :class:`~monai_ext.errors.DataError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import FolderScan, Reader, image_files
from .files import as_instance_label, load_image, log_skip, read_array

__all__ = ["A431Reader"]

_TEST_IMG = re.compile(r"img_(\d+)$")
_TEST_MASK = re.compile(r"masks?_(\d+)$")


class A431Reader(Reader):
    """A431 reader (see the module docstring).

    Args:
        root: folder holding ``train.json`` and/or ``test/``.
        label_type: how masks are read: ``"auto"``, ``"instance"`` or ``"binary"`` (see
            :func:`~monai_ext.data.readers.files.as_instance_label`).
        split, allow_empty: see :class:`~monai_ext.data.readers.base.Reader`.

    Records: ``id`` (``train_<k>`` / ``test_<k>``), ``image``, ``label`` (mask or ``None``), ``split``, and for train
    ``annotation`` (json) + ``index`` (entry position).
    """

    format = "a431"
    dataset = "a431"

    def __init__(self, root: str | Path, label_type: str = "auto", split: str | None = None,
                 allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        self.label_type = label_type
        self._entries: dict[str, list[Any]] = {}

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        files = set(scan.files)
        test = any(f.parent.name == "test" and _TEST_MASK.match(f.stem) for f in files)
        return Path("train.json") in files or test

    def _entries_of(self, js: Path) -> list[Any]:
        key = str(js)
        if key not in self._entries:
            try:
                data = json.loads(js.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise DataError(f"unreadable train.json ({exc})", js) from exc
            if not isinstance(data, list):
                raise DataError("train.json must be a list of {image_file, locations, ...} entries", js)
            self._entries[key] = data
        return self._entries[key]

    def _resolve(self, js: Path, name: Any, k: int, field: str) -> Path:
        if not isinstance(name, str) or not name:
            raise DataError(f"entry {k}: {field!r} must be a non-empty string, got {name!r}", js)
        for cand in (js.parent / name, js.parent / "train" / Path(name).name):
            if cand.is_file():
                return cand
        raise DataError(f"entry {k}: {field} {name!r} does not exist", js)

    def _records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        js = self.root / "train.json"
        if js.is_file():
            seen: dict[str, int] = {}
            for k, entry in enumerate(self._entries_of(js)):
                if not isinstance(entry, dict) or "image_file" not in entry or "locations" not in entry:
                    raise DataError(f"entry {k} lacks 'image_file' or 'locations'", js)
                if entry["image_file"] in seen:
                    raise DataError(f"duplicate image_file {entry['image_file']!r} (entries {seen[entry['image_file']]}"
                                    f" and {k})", js)
                seen[entry["image_file"]] = k
                locs = self._locations(entry, js, k)
                img = self._resolve(js, entry["image_file"], k, "image_file")
                if len(locs) == 0 and not self.allow_empty:
                    log_skip(img, f"train.json entry {k} has no locations (zero-instance image)")
                    continue
                mask = self._resolve(js, entry["mask_file"], k, "mask_file") if entry.get("mask_file") else None
                records.append(self._record(f"train_{k:04d}", img, split="train", label=None if mask is None else
                                            str(mask), annotation=str(js), index=k))
        test = self.root / "test"
        if test.is_dir():
            imgs, masks = {}, {}
            for f in image_files(test, (".tif", ".tiff")):
                if m := _TEST_IMG.match(f.stem):
                    imgs[int(m.group(1))] = f
                elif m := _TEST_MASK.match(f.stem):
                    masks[int(m.group(1))] = f
            for k in sorted(set(imgs) | set(masks)):
                if k not in masks:
                    raise DataError(f"missing pair: no masks_{k:04d}.tif for this test image", imgs[k])
                if k not in imgs:
                    raise DataError(f"missing pair: no img_{k:04d}.tif for this test mask", masks[k])
                records.append(self._record(f"test_{k:04d}", imgs[k], split="test", label=str(masks[k])))
        if not js.is_file() and not test.is_dir():
            raise DataError("no A431 data: expected train.json and/or test/img_*.tif + test/masks_*.tif", self.root)
        return records

    @staticmethod
    def _locations(entry: Mapping[str, Any], js: Path, k: int) -> np.ndarray:
        try:
            locs = np.asarray(entry["locations"], np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"entry {k}: 'locations' is not a list of [y, x] numbers", js) from exc
        if locs.size == 0:
            return np.zeros((0, 2), np.float32)
        if locs.ndim != 2 or locs.shape[1] != 2:
            raise DataError(f"entry {k}: 'locations' must be [[y, x], ...], got shape {locs.shape}", js)
        if not np.isfinite(locs).all():
            raise DataError(f"entry {k}: NaN/inf location", js)
        return locs.astype(np.float32)

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        image = load_image(record["image"])
        sample: dict[str, Any] = {"image": image}
        if record.get("label"):
            sample["label"] = as_instance_label(read_array(record["label"]), record["label"], self.label_type)[None]
        extra = {}
        if record.get("split") == "train" and record.get("annotation"):
            js = Path(record["annotation"])
            entry = self._entries_of(js)[int(record["index"])]
            sample["points"] = self._locations(entry, js, int(record["index"]))
            extra["annotation_path"] = str(js)
        sample["meta"] = self._meta(record, **extra)
        return sample
