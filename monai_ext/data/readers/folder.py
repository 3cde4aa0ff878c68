# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Plain folders of images and label images (tif / png), for users' own data.

Layout::

    [<split>/]images/<stem>.tif|.png|.jpg          images (any of 1-4 channels)
    [<split>/]labels/<stem>[_label|_mask|...].tif  instance labels (or masks/, label/, mask/, gt/, groundtruth/)
    [<split>/]points/<stem>.csv|.json|.png         optional point labels (y, x)

Pairs are matched by stem (the label stem may add ``_label``, ``_labels``, ``_mask``, ``_masks``, ``_seg`` or
``_gt``); split folders are ``train``/``val``/``test`` (or ``training``/``testing``...). Labels are read with
``label_type="auto"``: bool / uint8 {0, 255} or {0, 1} masks become connected components, other integer images are
ids (-1 = ignore).

Policies: with ``require_labels=True`` (default) an image without a label raises :class:`~monai_ext.errors.DataError`
(``False`` keeps it unlabelled); a label or point file without an image, or two files with one stem, always raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import DataError
from .base import FolderScan, Reader, image_files, pair_by_stem
from .files import as_instance_label, infer_split, load_image, read_array, read_points

__all__ = ["FolderReader"]

LABEL_DIRS = ("labels", "masks", "label", "mask", "gt", "groundtruth")
LABEL_SUFFIXES = ("", "_label", "_labels", "_mask", "_masks", "_seg", "_gt")
_POINT_EXTS = (".csv", ".json", ".png", ".tif", ".tiff")


class FolderReader(Reader):
    """Image + label folder reader (see the module docstring).

    Args:
        root: dataset folder.
        image_dir: name of the image folder(s).
        label_dir: name of the label folder(s) (default: the first of ``labels``, ``masks``, ``label``, ``mask``,
            ``gt``, ``groundtruth`` that exists).
        points_dir: name of the optional point folder(s).
        require_labels: whether an image without a label is an error.
        channels: required image channel count (``None``: any of 1-4; 3 drops an alpha channel).
        label_type: ``"auto"``, ``"instance"`` or ``"binary"``.
        split, allow_empty: see :class:`~monai_ext.data.readers.base.Reader`.
    """

    format = "folder"
    dataset = "folder"

    def __init__(self, root: str | Path, image_dir: str = "images", label_dir: str | None = None,
                 points_dir: str = "points", require_labels: bool = True, channels: int | None = None,
                 label_type: str = "auto", split: str | None = None, allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        self.image_dir, self.label_dir, self.points_dir = image_dir, label_dir, points_dir
        self.require_labels, self.channels, self.label_type = require_labels, channels, label_type

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        dirs = set(scan.dirs)
        return any(d.name == "images" and any(d.parent / n in dirs for n in LABEL_DIRS) for d in dirs)

    def _records(self) -> list[dict[str, Any]]:
        img_dirs = sorted(p for p in [self.root, *self.root.rglob("*")]
                          if p.is_dir() and p.name == self.image_dir)
        if not img_dirs:
            raise DataError(f"no {self.image_dir}/ folder found", self.root)
        records = []
        for img_dir in img_dirs:
            parent = img_dir.parent
            names = (self.label_dir,) if self.label_dir else LABEL_DIRS
            lab_dir = next((parent / n for n in names if (parent / n).is_dir()), None)
            images = image_files(img_dir)
            if not images:
                raise DataError("image folder is empty", img_dir)
            labels = image_files(lab_dir) if lab_dir is not None else []
            pairs = pair_by_stem(images, labels, lab_dir or parent, LABEL_SUFFIXES)
            pts_dir = parent / self.points_dir
            points = {p.stem: p for p in image_files(pts_dir, _POINT_EXTS)} if pts_dir.is_dir() else {}
            orphan = sorted(set(points) - set(pairs))
            if orphan:
                raise DataError(f"point file without an image {orphan[0]!r}", points[orphan[0]])
            rel = parent.relative_to(self.root).parts
            split = infer_split(rel)
            prefix = "_".join(rel) + "_" if rel else ""
            for stem, (img, lab) in pairs.items():
                if lab is None and self.require_labels:
                    where = lab_dir if lab_dir is not None else parent / "labels"
                    raise DataError(f"missing pair: no label for this image in {where} (pass require_labels=False "
                                    "for unlabelled images)", img)
                records.append(self._record(prefix + stem, img, split=split, label=None if lab is None else str(lab),
                                            points=str(points[stem]) if stem in points else None))
        return records

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        sample: dict[str, Any] = {"image": load_image(record["image"], channels=self.channels)}
        if record.get("label"):
            sample["label"] = as_instance_label(read_array(record["label"]), record["label"], self.label_type)[None]
        if record.get("points"):
            sample["points"] = read_points(record["points"], ndim=2)
        sample["meta"] = self._meta(record, points_path=record.get("points"))
        return sample

