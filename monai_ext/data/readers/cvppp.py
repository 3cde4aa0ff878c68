# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""CVPPP leaf segmentation (A1 and the other subsets), as PNG files or as the CVPPP2017 h5 files.

PNG layout: ``[<split>/]<subset>/plantXXX_rgb.png`` with ``plantXXX_label.png`` (and ``plantXXX_fg.png``) beside it,
e.g. ``train/A1/`` or the release's ``CVPPP2017_LSC_training/training/A1/``; the split comes from folder names.
Labels are colour-coded: a palette PNG gives the leaf ids directly; an RGB(A) label is decoded through the fixed
palette of :func:`~monai_ext.data.readers.codecs.cvppp_palette` when all its colours are in it, otherwise each distinct
non-black colour becomes an id 1..K in sorted colour order. Images are RGB (alpha dropped).

h5 layout: ``CVPPP2017_<split>_images.h5`` with ``<subset>/<plant>/rgb`` (RGBA) and, for labelled splits,
``CVPPP2017_<split>_truth.h5`` with ``<subset>/<plant>/label`` (``fg``, ``count`` ignored).

Policies: an image without its label raises :class:`~monai_ext.errors.DataError` except in the ``test`` split (the
challenge's test images come unlabelled); a label without its image raises.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import FolderScan, Reader
from .codecs import decode_palette_rgb
from .files import as_instance_label, infer_split, load_image, read_array

__all__ = ["CVPPPReader"]

logger = logging.getLogger(__name__)

_H5 = re.compile(r"CVPPP\d*_(?P<split>[a-z]+)_images\.h5$", re.IGNORECASE)


class CVPPPReader(Reader):
    """CVPPP reader for PNG folders and h5 files (see the module docstring).

    Args:
        root: dataset folder.
        subset: ``"A1"`` (default), another subset name, or ``None`` for all subsets.
        load_fg: also return the ``*_fg.png`` / h5 ``fg`` foreground mask as ``sample["fg"]`` (uint8 (1, H, W)).
        split, allow_empty: see :class:`~monai_ext.data.readers.base.Reader`.

    Records: ``id`` (``[<split>_]<subset>_<plant>``), ``image``, ``label`` (``None`` for unlabelled test images),
    ``fg``, ``h5_group`` (h5 only), ``subset``, ``split``.
    """

    format = "cvppp"
    dataset = "cvppp"

    def __init__(self, root: str | Path, subset: str | None = "A1", load_fg: bool = False, split: str | None = None,
                 allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        self.subset = subset
        self.load_fg = load_fg

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        return any(f.name.endswith("_rgb.png") for f in scan.files) or any(
            _H5.search(f.name) for f in scan.with_suffix(".h5"))

    def _records(self) -> list[dict[str, Any]]:
        records = self._png_records() + self._h5_records()
        if not records:
            raise DataError(f"no CVPPP images found (plant*_rgb.png or CVPPP2017_*_images.h5) for subset "
                            f"{self.subset!r}", self.root)
        return records

    def _png_records(self) -> list[dict[str, Any]]:
        records = []
        for rgb in sorted(self.root.rglob("*_rgb.png")):
            subset = rgb.parent.name
            if self.subset is not None and subset != self.subset:
                continue
            stem = rgb.name[: -len("_rgb.png")]
            split = infer_split(rgb.relative_to(self.root).parts[:-1])
            label = rgb.with_name(f"{stem}_label.png")
            fg = rgb.with_name(f"{stem}_fg.png")
            if not label.is_file():
                if split != "test":
                    raise DataError(f"missing pair: no {label.name} for this image (only the test split may be "
                                    "unlabelled)", rgb)
                label = None
            rid = "_".join(p for p in (split, subset, stem) if p)
            records.append(self._record(rid, rgb, split=split, label=None if label is None else str(label),
                                        fg=str(fg) if fg.is_file() else None, subset=subset, h5_group=None))
        labelled = {r["label"] for r in records if r["label"]}
        for lab in sorted(self.root.rglob("*_label.png")):
            if (self.subset is None or lab.parent.name == self.subset) and str(lab) not in labelled:
                raise DataError(f"missing pair: no {lab.name.replace('_label.png', '_rgb.png')} for this label", lab)
        return records

    def _h5_records(self) -> list[dict[str, Any]]:
        import h5py

        records = []
        for h5 in sorted(self.root.rglob("*.h5")):
            m = _H5.search(h5.name)
            if not m:
                continue
            split = infer_split([m.group("split")]) or m.group("split").lower()
            truth = h5.with_name(h5.name.replace("_images.h5", "_truth.h5"))
            try:
                with h5py.File(h5, "r") as f:
                    groups = {s: sorted(f[s].keys()) for s in f.keys()
                              if (self.subset is None or s == self.subset) and isinstance(f[s], h5py.Group)}
                truth_groups: dict[str, list[str]] = {}
                if truth.is_file():
                    with h5py.File(truth, "r") as t:
                        truth_groups = {s: sorted(t[s].keys()) for s in groups if s in t}
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"unreadable h5 file ({type(exc).__name__}: {exc})", h5) from exc
            for subset, plants in groups.items():
                for plant in plants:
                    has_label = plant in truth_groups.get(subset, [])
                    if not has_label and split != "test":
                        raise DataError(f"missing pair: {subset}/{plant} has no label in {truth.name}", h5)
                    records.append(self._record(
                        f"{split}_{subset}_{plant}_h5", h5, split=split, label=str(truth) if has_label else None,
                        fg=None, subset=subset, h5_group=f"{subset}/{plant}"))
        return records

    # ------------------------------------------------------------------------------------------------ load
    def decode_label(self, arr: np.ndarray, path: str) -> np.ndarray:
        """Colour-coded (palette or RGB) label array -> int32 ``(H, W)`` ids."""
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            if arr.shape[-1] == 4 and (arr[..., 3] == 0).any():
                arr = np.where(arr[..., 3:] == 0, 0, arr)
            ids, exact = decode_palette_rgb(arr[..., :3])
            if not exact:
                logger.warning("%s: label colours are not the fixed CVPPP palette; ids assigned in sorted colour "
                               "order", path)
            return ids
        return as_instance_label(arr, path, "instance")

    def _h5_read(self, path: str, group: str, name: str) -> np.ndarray:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if f"{group}/{name}" not in f:
                    raise DataError(f"h5 dataset {group}/{name} not found", path)
                return np.asarray(f[f"{group}/{name}"][()])
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"unreadable h5 dataset {group}/{name} ({type(exc).__name__}: {exc})", path) from exc

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        group = record.get("h5_group")
        if group:
            rgb = self._h5_read(record["image"], group, "rgb")
            image = load_image(f"{record['image']}:{group}/rgb", channels=3, arr=rgb)
            label = None
            if record.get("label"):
                label = self.decode_label(self._h5_read(record["label"], group, "label"), record["label"])
            fg = self._h5_read(record["label"], group, "fg") if self.load_fg and record.get("label") else None
        else:
            image = load_image(record["image"], channels=3)
            label = self.decode_label(read_array(record["label"]), record["label"]) if record.get("label") else None
            fg = read_array(record["fg"]) if self.load_fg and record.get("fg") else None
        sample: dict[str, Any] = {"image": image}
        if label is not None:
            sample["label"] = label[None]
        if fg is not None:
            fg = np.asarray(fg)
            if fg.ndim == 3:
                fg = fg[..., 0]
            if fg.shape != image.shape[1:]:
                raise DataError(f"foreground mask shape {fg.shape} does not match image shape {image.shape[1:]}",
                                record.get("fg") or record.get("label"))
            sample["fg"] = (fg > 0).astype(np.uint8)[None]
        sample["meta"] = self._meta(record, subset=record.get("subset"), h5_group=group)
        return sample
