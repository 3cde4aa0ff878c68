# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""MoNuSeg: RGB ``.tif`` images with Aperio ImageScope XML polygon annotations, rasterised to instance labels.

Folder layouts found (anywhere under the root, searched recursively):

- ``<stem>.tif`` next to ``<stem>.xml`` (MoNuSegTestData);
- ``Tissue Images/<stem>.tif`` with ``Annotations/<stem>.xml`` (MoNuSeg 2018 Training Data).

The split comes from folder names (``train``/``training``/``MoNuSeg 2018 Training Data`` -> ``"train"``,
``test``/``MoNuSegTestData`` -> ``"test"``).

Rasterisation: each ``<Region>`` (``<Vertex X=col Y=row/>``, pixel coordinates) is filled with
:func:`skimage.draw.polygon` (pixels whose centre lies inside). Instance ids are 1..N in document order of the
regions. **Overlaps**: a pixel covered by several polygons goes to the smallest polygon (fewest pixels); ties go to the
earlier region. Policies: regions with fewer than 3 vertices, with ``NegativeROA="1"`` (holes), or that rasterise to
no pixel are skipped with a logged warning; vertices up to ``bounds_tolerance`` pixels outside the image are
clipped, farther ones raise :class:`~monai_ext.errors.DataError`; an XML without any region raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from ...errors import DataError
from .base import FolderScan, Reader
from .files import load_image, log_skip, paint_instances

__all__ = ["MoNuSegReader", "parse_aperio_xml", "rasterize_polygons"]

logger = logging.getLogger(__name__)

_IMG_EXTS = (".tif", ".tiff", ".png")


def parse_aperio_xml(path: str | Path) -> list[np.ndarray]:
    """Polygons of an Aperio ImageScope XML as ``(K, 2)`` float64 (y, x) arrays, in document order.

    Holes (``NegativeROA="1"``) and regions with fewer than 3 vertices are skipped with a warning.

    Raises:
        DataError: unreadable / malformed XML, a non-numeric or non-finite vertex, or no region at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("annotation file does not exist", path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed Aperio XML ({exc})", path) from exc
    if root.tag != "Annotations":
        raise DataError(f"not an Aperio ImageScope XML (root element <{root.tag}>, expected <Annotations>)", path)
    polys: list[np.ndarray] = []
    regions = root.findall("./Annotation/Regions/Region")
    for k, region in enumerate(regions, start=1):
        rid = region.get("Id", str(k))
        if region.get("NegativeROA", "0") == "1":
            log_skip(path, f"region Id={rid} is a negative (hole) region; holes are not subtracted")
            continue
        verts = region.findall("./Vertices/Vertex")
        try:
            xy = np.array([[float(v.attrib["X"]), float(v.attrib["Y"])] for v in verts], np.float64).reshape(-1, 2)
        except (KeyError, ValueError) as exc:
            raise DataError(f"region Id={rid} has a vertex without a numeric X/Y ({exc!r})", path) from exc
        if not np.isfinite(xy).all():
            raise DataError(f"region Id={rid} has a NaN/inf vertex", path)
        if len(xy) < 3:
            log_skip(path, f"region Id={rid} has {len(xy)} vertices (< 3), not a polygon")
            continue
        polys.append(xy[:, ::-1].copy())
    if not regions:
        raise DataError("annotation file has no <Region> polygons (empty annotation)", path)
    if not polys:
        raise DataError("annotation file has no usable polygon (all regions skipped)", path)
    return polys


def rasterize_polygons(
    polygons: list[np.ndarray], shape: tuple[int, int], path: str | Path | None = None, bounds_tolerance: float = 2.0
) -> np.ndarray:
    """Fill (y, x) polygons into an int32 instance map (ids 1..N in list order; smaller polygon wins overlaps).

    Raises:
        DataError: a vertex farther than ``bounds_tolerance`` pixels outside the image.
    """
    from skimage.draw import polygon as draw_polygon

    h, w = shape
    rr_all, cc_all, owner = [], [], []
    for k, poly in enumerate(polygons):  # skimage fills one polygon per call
        lo, hi = poly.min(0), poly.max(0)
        if (lo < -0.5 - bounds_tolerance).any() or hi[0] > h - 0.5 + bounds_tolerance or \
                hi[1] > w - 0.5 + bounds_tolerance:
            raise DataError(f"polygon {k + 1} is out of bounds: y in [{lo[0]:.1f}, {hi[0]:.1f}], x in "
                            f"[{lo[1]:.1f}, {hi[1]:.1f}] for an image of {h}x{w} pixels", path)
        rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape=(h, w))
        if rr.size == 0:
            log_skip(path or "polygons", f"polygon {k + 1} covers no pixel centre")
            continue
        rr_all.append(rr)
        cc_all.append(cc)
        owner.append(np.full(rr.size, k, np.int64))
    if not rr_all:
        return np.zeros((h, w), np.int32)
    ids = np.arange(1, len(polygons) + 1)
    label = paint_instances((h, w), np.concatenate(rr_all), np.concatenate(cc_all), np.concatenate(owner), ids)
    lost = np.setdiff1d(np.unique(np.concatenate(owner)) + 1, np.unique(label))
    if lost.size:
        logger.warning("%s: %d polygon(s) fully covered by smaller ones: ids %s", path, lost.size, lost.tolist()[:10])
    return label


class MoNuSegReader(Reader):
    """MoNuSeg tif + Aperio XML reader (see the module docstring for layouts and policies).

    Args:
        root: dataset folder.
        bounds_tolerance: how far (pixels) vertices may lie outside the image before it is an error.
        split, allow_empty: see :class:`~monai_ext.data.readers.base.Reader`.

    Records: ``id`` (file stem), ``image`` (tif), ``label`` (xml), ``split``. Samples: ``image`` (3, H, W),
    ``label`` (1, H, W), ``meta`` with ``annotation_path`` and ``n_polygons``.
    """

    format = "monuseg"
    dataset = "monuseg"

    def __init__(self, root: str | Path, bounds_tolerance: float = 2.0, split: str | None = None,
                 allow_empty: bool | None = None) -> None:
        super().__init__(root, split=split, allow_empty=allow_empty)
        self.bounds_tolerance = float(bounds_tolerance)

    @classmethod
    def matches(cls, scan: FolderScan) -> bool:
        xml_stems = {f.stem for f in scan.with_suffix(".xml")}
        img_stems = {f.stem for f in scan.with_suffix(*_IMG_EXTS)}
        return bool(xml_stems & img_stems)

    def _records(self) -> list[dict[str, Any]]:
        xmls = sorted(self.root.rglob("*.xml"))
        xmls = [x for x in xmls if x.is_file() and not x.name.startswith(".")]
        images = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in _IMG_EXTS and p.is_file())
        if not xmls and not images:
            raise DataError("no MoNuSeg files (.tif images with .xml annotations) found", self.root)
        by_stem: dict[str, list[Path]] = {}
        for p in images:
            by_stem.setdefault(p.stem, []).append(p)
        records, used = [], set()
        for xml in xmls:
            cands = by_stem.get(xml.stem, [])
            if len(cands) > 1:  # prefer the one next to the xml, then one in a sibling "Tissue Images"-like folder
                near = [c for c in cands if c.parent == xml.parent] or [c for c in cands if c.parent.parent ==
                                                                          xml.parent.parent]
                if len(near) != 1:
                    raise DataError(f"several images match this annotation: {[str(c) for c in cands]}", xml)
                cands = near
            if not cands:
                raise DataError(f"missing pair: no image file {xml.stem}.tif for this annotation", xml)
            img = cands[0]
            used.add(img)
            records.append(self._record(xml.stem, img, label=str(xml)))
        orphans = sorted(set(images) - used)
        if orphans:
            raise DataError(f"missing pair: no annotation file {orphans[0].stem}.xml for this image", orphans[0])
        return records

    def _load(self, record: Mapping[str, Any]) -> dict[str, Any]:
        polys = parse_aperio_xml(record["label"])
        image = load_image(record["image"], channels=3)
        label = rasterize_polygons(polys, image.shape[1:], record["label"], self.bounds_tolerance)
        meta = self._meta(record, annotation_path=record["label"], n_polygons=len(polys))
        return {"image": image, "label": label[None], "meta": meta}

