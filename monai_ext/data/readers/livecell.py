# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""LIVECell: COCO json polygon annotations over 8-bit grayscale 520x704 tif images.

Layout: ``annotations/LIVECell/livecell_coco_{train,val,test}.json`` (any ``livecell*_{train,val,test}.json`` under the
root is used, split from the name) and images anywhere under the root (``images/livecell_{train_val,test}_images/``,
flat or in ``<cell line>/`` sub-folders), found by file name. The cell line is the file-name prefix before the first
``_`` (``A172_Phase_C7_1_00d00h00m_1.tif`` -> ``A172``).

The real files store ``annotations`` as a dict keyed by id (plain pycocotools cannot index that); both that and a
standard COCO list are accepted. Polygons (and RLEs) are rasterised with pycocotools; overlapping cells: the smaller
cell wins (ties: lower annotation id). Points are the instance centroids (mean pixel coordinate, (y, x)).

Policies: images without any annotation are skipped with a logged warning (unless ``allow_empty``); annotations whose
polygon has fewer than 3 vertices are skipped with a warning; duplicate image / annotation ids, annotations of unknown
images, missing image files, a size that differs from the json, and polygons farther than ``bounds_tolerance`` pixels
outside the image raise :class:`~monai_ext.errors.DataError`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import FolderScan, Reader
from .files import centroids, load_image, log_skip, paint_instances

__all__ = ["LiveCellReader", "load_coco"]

logger = logging.getLogger(__name__)

_JSON_SPLIT = re.compile(r"(train|val|test)\.json$", re.IGNORECASE)
_CHUNK = 64  # masks decoded per pycocotools call: bounds memory to H*W*64 bytes


def load_coco(path: str | Path) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """Parse and validate a (LIVECell) COCO json.

    Returns:
        ``(images by id, annotations by image id)``; annotations sorted by id.

    Raises:
        DataError: unreadable json, missing ``images``/``annotations``, duplicate ids, dangling image ids,
            missing fields.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"unreadable COCO json ({exc})", path) from exc
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError("not a COCO json: needs top-level 'images' and 'annotations'", path)
    anns = data["annotations"]
    if isinstance(anns, dict):  # LIVECell stores {"<id>": ann}
        anns = list(anns.values())
    if not isinstance(anns, list) or not isinstance(data["images"], list):
        raise DataError("'images' and 'annotations' must be lists (or an id-keyed dict of annotations)", path)
    images: dict[int, dict[str, Any]] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or not {"id", "file_name"} <= set(im):
            raise DataError(f"image entry without 'id'/'file_name': {str(im)[:120]}", path)
        if im["id"] in images:
            raise DataError(f"duplicate image id {im['id']} ({images[im['id']]['file_name']}, {im['file_name']})", path)
        images[im["id"]] = im
    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    seen: set[Any] = set()
    for ann in anns:
        if not isinstance(ann, dict) or not {"id", "image_id", "segmentation"} <= set(ann):
            raise DataError(f"annotation without 'id'/'image_id'/'segmentation': {str(ann)[:120]}", path)
        if ann["id"] in seen:
            raise DataError(f"duplicate annotation id {ann['id']}", path)
        seen.add(ann["id"])
        if ann["image_id"] not in by_image:
            raise DataError(f"annotation {ann['id']} refers to unknown image id {ann['image_id']}", path)
        by_image[ann["image_id"]].append(ann)
    for lst in by_image.values():
        lst.sort(key=lambda a: a["id"])
    return images, by_image


def rasterize_coco(anns: list[dict[str, Any]], shape: tuple[int, int], path: str | Path,
                   bounds_tolerance: float = 2.0) -> np.ndarray:
    """COCO polygon / RLE annotations -> int32 instance map (ids 1..N in annotation order; smaller wins)."""
    from pycocotools import mask as mask_utils

    h, w = shape
    rles, owners = [], []
    for k, ann in enumerate(anns):
        seg = ann["segmentation"]
        if isinstance(seg, dict):  # RLE (iscrowd)
            if list(seg.get("size", [])) != [h, w]:
                raise DataError(f"annotation {ann['id']}: RLE size {seg.get('size')} != image size {[h, w]}", path)
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
        else:
            polys = []
            for poly in seg if isinstance(seg, list) else []:
                try:
                    xy = np.asarray(poly, np.float64).reshape(-1, 2)
                except (TypeError, ValueError) as exc:
                    raise DataError(f"annotation {ann['id']}: polygon is not a flat list of x, y numbers",
                                    path) from exc
                if not np.isfinite(xy).all():
                    raise DataError(f"annotation {ann['id']}: NaN/inf polygon coordinate", path)
                if len(xy) < 3:
                    continue
                lo, hi = xy.min(0), xy.max(0)
                if (lo < -bounds_tolerance).any() or hi[0] > w + bounds_tolerance or hi[1] > h + bounds_tolerance:
                    raise DataError(f"annotation {ann['id']}: polygon out of bounds (x in [{lo[0]:.1f}, {hi[0]:.1f}],"
                                    f" y in [{lo[1]:.1f}, {hi[1]:.1f}]) for a {w}x{h} image", path)
                polys.append(xy.reshape(-1).tolist())
            if not polys:
                log_skip(path, f"annotation {ann['id']} has no polygon with >= 3 vertices")
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        rles.append(rle)
        owners.append(k)
    rr_all, cc_all, own_all = [], [], []
    for s in range(0, len(rles), _CHUNK):
        masks = mask_utils.decode(rles[s:s + _CHUNK])  # (H, W, n) uint8
        rr, cc, kk = np.nonzero(masks)
        rr_all.append(rr)
        cc_all.append(cc)
        own_all.append(np.asarray(owners[s:s + _CHUNK], np.int64)[kk])
    if not rr_all:
        return np.zeros((h, w), np.int32)
    ids = np.arange(1, len(anns) + 1)
    return paint_instances((h, w), np.concatenate(rr_all), np.concatenate(cc_all), np.concatenate(own_all), ids)


class LiveCellReader(Reader):
    """LIVECell COCO reader (see the module docstring).

    Args:
        root: dataset folder.
        annotation_files: explicit ``{split: json path}`` (relative to ``root`` or absolute) instead of the search.
        bounds_tolerance: pixels a polygon may stick out of the image before it is an error.
        split, allow_empty: see :class:`~monai_ext.data.readers.base.Reader`.

    Records: ``id`` (file stem), ``image``, ``annotation`` (json), ``image_id``, ``height``, ``width``,
    ``cell_line``, ``split``. Samples: ``image`` (1, H, W), ``label`` (1, H, W), ``points`` (N, 2) centroids in
    label-id order, ``meta`` with ``cell_line`` and ``annotation_path``.
    """

    format = "livecell"
    dataset = "livecell"

    def __init__(self, root: str | Path, annotation_files: Mapping[str, str | Path] | None = None,
                 bounds_tolerance: float = 2.0, split: str | None = None, allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        self.annotation_files = None if annotation_files is None else {
            s: (p if Path(p).is_absolute() else self.root / p) for s, p in annotation_files.items()}
        self.bounds_tolerance = float(bounds_tolerance)
        self._coco: dict[str, tuple[dict, dict]] = {}

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        return any(f.name.lower().startswith("livecell") for f in scan.with_suffix(".json"))

    def _json_files(self) -> dict[str, Path]:
        if self.annotation_files is not None:
            return {s: Path(p) for s, p in self.annotation_files.items()}
        found: dict[str, Path] = {}
        for js in sorted(self.root.rglob("*.json")):
            m = _JSON_SPLIT.search(js.name)
            if not js.name.lower().startswith("livecell") or not m:
                continue
            split = m.group(1).lower()
            if split in found:
                raise DataError(f"two annotation files for split {split!r}: {found[split]} and {js}", self.root)
            found[split] = js
        if not found:
            raise DataError("no LIVECell annotation json (livecell*_{train,val,test}.json) found", self.root)
        return found

    def _coco_for(self, path: str | Path) -> tuple[dict, dict]:
        key = str(path)
        if key not in self._coco:
            self._coco[key] = load_coco(path)
        return self._coco[key]

    def _records(self) -> list[dict[str, Any]]:
        tifs: dict[str, list[Path]] = {}
        for p in self.root.rglob("*"):
            if p.suffix.lower() in (".tif", ".tiff", ".png") and p.is_file():
                tifs.setdefault(p.name, []).append(p)
        records = []
        for split, js in sorted(self._json_files().items()):
            if not js.is_file():
                raise DataError("annotation file does not exist", js)
            images, by_image = self._coco_for(js)
            if not images:
                raise DataError("COCO json lists no images", js)
            for iid, im in images.items():
                name = im["file_name"]
                if not by_image[iid] and not self.allow_empty:
                    log_skip(js, f"image {name} has no annotations (zero-instance image)")
                    continue
                cands = tifs.get(Path(name).name, [])
                if not cands:
                    raise DataError(f"missing pair: image file {name} listed in the annotations was not found under "
                                    f"{self.root}", js)
                if len(cands) > 1:  # same name in both image folders: take the split's own folder
                    own = "livecell_test_images" if split == "test" else "livecell_train_val_images"
                    cands = [c for c in cands if own in c.parts] or cands
                if len(cands) > 1:
                    raise DataError(f"image file name {name} is ambiguous: {[str(c) for c in cands]}", js)
                records.append(self._record(
                    Path(name).stem, cands[0], split=split, annotation=str(js), image_id=iid,
                    height=int(im.get("height", 0)), width=int(im.get("width", 0)),
                    cell_line=Path(name).name.split("_")[0]))
        return records

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        image = load_image(record["image"], channels=1)
        h, w = image.shape[1:]
        if record.get("height") and (record["height"], record["width"]) != (h, w):
            raise DataError(f"image is {h}x{w} but the annotations say {record['height']}x{record['width']}",
                            record["image"])
        _, by_image = self._coco_for(record["annotation"])
        anns = by_image.get(record["image_id"])
        if anns is None:
            raise DataError(f"image id {record['image_id']} is not in the annotation file", record["annotation"])
        label = rasterize_coco(anns, (h, w), record["annotation"], self.bounds_tolerance)
        points, _ = centroids(label)
        meta = self._meta(record, cell_line=record.get("cell_line"), annotation_path=record["annotation"],
                          n_annotations=len(anns))
        return {"image": image, "label": label[None], "points": points, "meta": meta}
