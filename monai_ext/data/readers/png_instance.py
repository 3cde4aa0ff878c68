# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""PNG instance masks: the COIN repository layout and TNBC.

Layouts found under the root:

- **COIN**: ``[<split>/]image/<stem>.png`` + ``[<split>/]mask/<stem>.png`` (images may be png/tif/jpg). The split
  is the folder name (``train``/``test``/``val``).
- **TNBC**: ``Slide_<pp>/<pp>_<k>.png`` + ``GT_<pp>/<pp>_<k>.png``. TNBC has no official split; pass ``test_ids``
  (stems such as ``"01_1"``) to mark test images, or use :func:`~monai_ext.data.readers.base.split_datalist`.

Mask decoding (``mask_encoding``):

- ``"coin"``: RGB mask, id = ``B * 256 + G`` (ids > 255 round-trip), white ``(255, 255, 255)`` = ignore -> -1;
- ``"gray"``: single-channel 8/16/32-bit ids;
- ``"binary"``: foreground -> connected components (4-connectivity), so touching nuclei merge (TNBC ground truth
  is binary 0/255);
- ``"auto"`` (default): RGB(A) -> coin; single-channel uint8 holding only {0, 255} or {0, 1} -> binary; else gray.

Images must be RGB (RGBA loses its alpha channel).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import FolderScan, Reader, image_files, pair_by_stem
from .codecs import decode_coin_mask
from .files import as_instance_label, load_image, read_array

__all__ = ["PngInstanceReader"]

_IMAGE_DIRS = ("image",)  # plural images/ + masks/ is the plain "folder" format
_MASK_DIRS = ("mask",)


class PngInstanceReader(Reader):
    """COIN / TNBC PNG instance-mask reader (see the module docstring).

    Args:
        root: dataset folder.
        mask_encoding: ``"auto"``, ``"coin"``, ``"gray"`` or ``"binary"``.
        test_ids: stems that form the ``"test"`` split where the layout has no split folders (TNBC); the rest
            become ``"train"``.
        split, allow_empty: see :class:`~monai_ext.data.readers.base.Reader`.

    Records: ``id`` (stem, prefixed by the split folder when needed for uniqueness), ``image``, ``label``, ``split``,
    ``layout`` (``"coin"`` / ``"tnbc"``).
    """

    format = "png_instance"
    dataset = "png_instance"

    def __init__(self, root: str | Path, mask_encoding: str = "auto", test_ids: Iterable[str] | None = None,
                 split: str | None = None, allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        if mask_encoding not in ("auto", "coin", "gray", "binary"):
            raise ValueError(f"mask_encoding must be 'auto', 'coin', 'gray' or 'binary', got {mask_encoding!r}")
        self.mask_encoding = mask_encoding
        self.test_ids = None if test_ids is None else {str(t) for t in test_ids}

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        names = scan.dir_names()
        tnbc = any(n.startswith("Slide_") for n in names) and any(n.startswith("GT_") for n in names)
        dirs = set(scan.dirs)
        coin = any(d.name in _IMAGE_DIRS and any(d.parent / m in dirs for m in _MASK_DIRS) for d in dirs)
        return tnbc or coin

    def _records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        dirs = [self.root] + sorted(p for p in self.root.rglob("*") if p.is_dir() and not p.name.startswith("."))
        # COIN: <parent>/image + <parent>/mask
        for parent in dirs:
            img_dir = next((parent / n for n in _IMAGE_DIRS if (parent / n).is_dir()), None)
            mask_dir = next((parent / n for n in _MASK_DIRS if (parent / n).is_dir()), None)
            if img_dir is None or mask_dir is None:
                continue
            pairs = pair_by_stem(image_files(img_dir), image_files(mask_dir), mask_dir)
            prefix = "" if parent == self.root else parent.relative_to(self.root).as_posix().replace("/", "_") + "_"
            for stem, (img, mask) in pairs.items():
                if mask is None:
                    raise DataError(f"missing pair: no mask {stem}.png in {mask_dir}", img)
                records.append(self._record(prefix + stem, img, label=str(mask), layout="coin"))
        # TNBC: Slide_<pp> + GT_<pp>
        for slide in dirs:
            m = re.fullmatch(r"Slide_(.+)", slide.name)
            if not m:
                continue
            gt_dir = slide.parent / f"GT_{m.group(1)}"
            if not gt_dir.is_dir():
                raise DataError(f"missing pair: no ground-truth folder {gt_dir.name} for this slide folder", slide)
            pairs = pair_by_stem(image_files(slide), image_files(gt_dir), gt_dir)
            for stem, (img, mask) in pairs.items():
                if mask is None:
                    raise DataError(f"missing pair: no ground truth {gt_dir.name}/{img.name}", img)
                split = None if self.test_ids is None else ("test" if stem in self.test_ids else "train")
                records.append(self._record(stem, img, split=split, label=str(mask), layout="tnbc"))
        for gt in (d for d in dirs if d.name.startswith("GT_")):
            if not (gt.parent / f"Slide_{gt.name[3:]}").is_dir():
                raise DataError(f"missing pair: no image folder Slide_{gt.name[3:]} for this ground-truth folder", gt)
        if self.test_ids is not None:
            unknown = self.test_ids - {r["id"] for r in records}
            if unknown:
                raise DataError(f"test_ids not found in the dataset: {sorted(unknown)}", self.root)
        return records

    def decode_mask(self, arr: np.ndarray, path: str) -> np.ndarray:
        """Decode a mask array read from ``path`` into an int32 ``(H, W)`` instance map."""
        enc = self.mask_encoding
        if enc == "auto":
            enc = "coin" if arr.ndim == 3 and arr.shape[-1] in (3, 4) else "auto"
        if enc == "coin":
            if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
                raise DataError(f"COIN masks are 8-bit RGB, got shape {arr.shape} dtype {arr.dtype}", path)
            return decode_coin_mask(arr)
        if enc == "gray":
            return as_instance_label(arr, path, "instance")
        return as_instance_label(arr, path, "binary" if enc == "binary" else "auto")

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        image = load_image(record["image"], channels=3)
        label = self.decode_mask(read_array(record["label"]), record["label"])
        meta = self._meta(record, layout=record.get("layout"))
        return {"image": image, "label": label[None], "meta": meta}
