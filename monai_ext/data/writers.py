# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Writers for every dataset format the readers understand, in the real on-disk layouts.

Used by the tests (fixture files in the exact public formats) and by the sample-data generator. Every writer takes
NumPy arrays in our conventions (images ``(H, W)`` / ``(H, W, C)`` channel-LAST as stored on disk, instance labels
``(H, W)`` / ``(D, H, W)`` integers, points ``(N, 2)`` (y, x) or ``(N, 3)`` (z, y, x)) and returns the written path(s)
(a ``dict[str, Path]`` where several files are written). Folders are created as needed.

Layouts written (the readers in :mod:`monai_ext.data.readers` expect the same):

- MoNuSeg (:func:`write_monuseg`): ``<stem>.tif`` RGB + ``<stem>.xml`` Aperio ImageScope polygons, side by side
  (``layout="flat"``, like MoNuSegTestData) or in ``Tissue Images/`` and ``Annotations/`` (``layout="official"``).
- COIN PNGs (:func:`write_png_instance`): ``<split>/image/<stem>.png`` + ``<split>/mask/<stem>.png``.
- TNBC (:func:`write_tnbc`): ``Slide_<pp>/<pp>_<k>.png`` RGB + ``GT_<pp>/<pp>_<k>.png`` binary 0/255 masks.
- LIVECell (:func:`write_livecell`): ``annotations/LIVECell/livecell_coco_<split>.json`` + ``images/livecell_
  {train_val,test}_images/[<line>/]<file>.tif``; like the real files, ``annotations`` is a dict keyed by id.
- A431 (:func:`write_a431`): ``train.json`` + ``train/img_<k>.tif`` (+ ``train/mask_<k>.tif``) and
  ``test/img_<k>.tif`` + ``test/masks_<k>.tif``.
- EM (:func:`write_em_volume`, :func:`write_em_slices`, :func:`write_points`): tif stacks, h5 datasets, folders of
  2D slices, sparse point files (png / csv / json).
- CVPPP (:func:`write_cvppp`, :func:`write_cvppp_h5`): ``plantXXX_{rgb,label,fg}.png`` and the CVPPP2017 h5 pair.
- Plain folders (:func:`write_folder_pair`): ``images/<stem><ext>`` + ``labels/<stem><ext>``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from .readers.codecs import cvppp_palette, encode_coin_mask

__all__ = [
    "write_image",
    "write_label",
    "label_to_polygons",
    "monuseg_xml",
    "write_monuseg",
    "write_coin_png_mask",
    "write_png_instance",
    "write_tnbc",
    "write_livecell",
    "write_a431",
    "write_em_volume",
    "write_em_slices",
    "write_points",
    "write_cvppp",
    "write_cvppp_h5",
    "write_folder_pair",
]

PathLike = str | os.PathLike


def _prep(path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_image(path: PathLike, image: np.ndarray) -> Path:
    """Write a 2D image ``(H, W)`` or ``(H, W, C)`` (channel-last) as tif (any dtype) or png (uint8 / uint16).

    The format follows the suffix (``.tif``/``.tiff``, ``.png``, ``.jpg``). In tif, 3 / 4 trailing channels are RGB(A),
    other channel counts interleaved samples (so the file says which axis holds the channels).
    """
    path = _prep(path)
    image = np.asarray(image)
    suffix = path.suffix.lower()
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if suffix in (".tif", ".tiff"):
        import tifffile

        if image.ndim not in (2, 3):
            raise ValueError(f"{path}: write_image takes (H, W) or (H, W, C); use write_em_volume for stacks")
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            tifffile.imwrite(path, image, photometric="rgb")
        elif image.ndim == 3:  # interleaved samples, not pages of (W, C) pixels
            tifffile.imwrite(path, image, photometric="minisblack", planarconfig="contig")
        else:
            tifffile.imwrite(path, image, photometric="minisblack")
    elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        from PIL import Image

        if image.dtype == np.bool_:
            image = image.astype(np.uint8) * 255
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{path}: {suffix} images are uint8 or uint16, got {image.dtype}")
        if image.dtype == np.uint16 and image.ndim != 2:
            raise ValueError(f"{path}: 16-bit {suffix} images must be single channel")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (2, 3, 4)):
            raise ValueError(f"{path}: {suffix} images are (H, W) or (H, W, 2|3|4), got {image.shape}")
        Image.fromarray(image).save(path)
    else:
        raise ValueError(f"{path}: unsupported image suffix {suffix!r}")
    return path


def write_label(path: PathLike, label: np.ndarray) -> Path:
    """Write an instance label ``(H, W)`` / ``(D, H, W)``: png as uint8/uint16 (smallest that fits), tif as int32.

    Negative ids (-1 = ignore) need tif.
    """
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer) and label.dtype != np.bool_:
        raise ValueError(f"{path}: labels must be integers, got {label.dtype}")
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        if label.ndim != 2 or (label.size and (label.min() < 0 or label.max() > 65535)):
            raise ValueError(f"{path}: png labels are 2D with ids in [0, 65535]")
        dtype = np.uint8 if not label.size or label.max() <= 255 else np.uint16
        return write_image(path, label.astype(dtype))
    return write_image(path, label.astype(np.int32))


# ----------------------------------------------------------------------------------------------------- polygons
def label_to_polygons(label: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Outer contour of each instance as a closed polygon in pixel-centre (y, x) coordinates.

    Uses :func:`skimage.measure.find_contours` at level 0.5 on the instance's padded bounding-box crop and keeps the
    longest contour, so holes and extra disconnected parts are dropped (the writers that use this are lossy there).
    Rasterising the result with :func:`skimage.draw.polygon` gives back the instance up to corner pixels.

    Returns:
        ``[(id, (K, 2) float64 array), ...]`` in ascending id order (ignore / background excluded).
    """
    from scipy import ndimage
    from skimage.measure import find_contours

    label = np.asarray(label)
    out: list[tuple[int, np.ndarray]] = []
    lab = np.where(label > 0, label, 0).astype(np.int64)
    if not lab.any():
        return out
    ids = np.unique(lab[lab > 0])
    boxes = ndimage.find_objects(lab)
    for i in ids:  # one contour per instance: find_contours has no batched form
        sl = boxes[i - 1]
        crop = np.pad(lab[sl] == i, 1).astype(np.float32)
        contours = find_contours(crop, 0.5)
        if not contours:
            continue
        poly = max(contours, key=len) - 1.0 + np.array([sl[0].start, sl[1].start], np.float64)
        out.append((int(i), poly))
    return out


def monuseg_xml(label: np.ndarray, microns_per_pixel: float = 0.252) -> str:
    """Aperio ImageScope XML (MoNuSeg style) for an instance label: one ``<Region>`` per instance, in id order.

    ``<Annotations><Annotation Id="1"><Regions><Region Id=k><Vertices><Vertex X=col Y=row Z="0"/>`` with vertex
    coordinates in pixels (x = column, y = row).
    """
    root = ET.Element("Annotations", MicronsPerPixel=f"{microns_per_pixel:.6f}")
    ann = ET.SubElement(
        root, "Annotation", Id="1", Name="", ReadOnly="0", NameReadOnly="0", LineColorReadOnly="0",
        Incremental="0", Type="4", LineColor="65280", Visible="1", Selected="1", MarkupImagePath="", MacroName="",
    )
    attrs = ET.SubElement(ann, "Attributes")
    ET.SubElement(attrs, "Attribute", Name="Description", Id="0", Value="")
    regions = ET.SubElement(ann, "Regions")
    headers = ET.SubElement(regions, "RegionAttributeHeaders")
    ET.SubElement(headers, "AttributeHeader", Id="9999", Name="Region", ColumnWidth="-1")
    for k, (_, poly) in enumerate(label_to_polygons(label), start=1):
        y, x = poly[:-1, 0], poly[:-1, 1]  # find_contours closes the ring; Aperio does not repeat the vertex
        area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        length = float(np.hypot(np.diff(poly[:, 1]), np.diff(poly[:, 0])).sum())
        region = ET.SubElement(
            regions, "Region", Id=str(k), Type="0", Zoom="1", Selected="0", ImageLocation="", ImageFocus="-1",
            Length=f"{length:.1f}", Area=f"{area:.1f}", LengthMicrons=f"{length * microns_per_pixel:.1f}",
            AreaMicrons=f"{area * microns_per_pixel ** 2:.1f}", Text="", NegativeROA="0", InputRegionId="0",
            Analyze="1", DisplayId=str(k),
        )
        ET.SubElement(region, "Attributes")
        verts = ET.SubElement(region, "Vertices")
        for xv, yv in zip(x.tolist(), y.tolist()):
            ET.SubElement(verts, "Vertex", X=f"{xv:g}", Y=f"{yv:g}", Z="0")
    ET.SubElement(ann, "Plots")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def write_monuseg(
    directory: PathLike,
    stem: str,
    image_rgb_uint8: np.ndarray,
    instance_label: np.ndarray,
    layout: str = "flat",
    microns_per_pixel: float = 0.252,
) -> dict[str, Path]:
    """Write one MoNuSeg image: ``<stem>.tif`` (RGB uint8) + ``<stem>.xml`` (polygons from the instance contours).

    Args:
        directory: dataset folder (or a split folder inside it).
        stem: file stem, e.g. ``"TCGA-A7-A13E-01Z-00-DX1"``.
        image_rgb_uint8: ``(H, W, 3)`` uint8.
        instance_label: ``(H, W)`` ids (0 = background); see :func:`label_to_polygons` for what survives.
        layout: ``"flat"`` (tif and xml side by side, like MoNuSegTestData) or ``"official"``
            (``Tissue Images/`` + ``Annotations/``, like "MoNuSeg 2018 Training Data").
        microns_per_pixel: written to the XML header.

    Returns:
        ``{"image": tif path, "annotation": xml path}``.
    """
    directory = Path(directory)
    if layout == "flat":
        img_dir = ann_dir = directory
    elif layout == "official":
        img_dir, ann_dir = directory / "Tissue Images", directory / "Annotations"
    else:
        raise ValueError(f"layout must be 'flat' or 'official', got {layout!r}")
    img = write_image(img_dir / f"{stem}.tif", np.asarray(image_rgb_uint8))
    xml = _prep(ann_dir / f"{stem}.xml")
    xml.write_text(monuseg_xml(instance_label, microns_per_pixel))
    return {"image": img, "annotation": xml}


# ---------------------------------------------------------------------------------------------- PNG instance masks
def write_coin_png_mask(path: PathLike, label: np.ndarray) -> Path:
    """Write a COIN-encoded instance mask PNG (id = B*256 + G, ignore -1 -> white); see :mod:`.readers.codecs`."""
    return write_image(path, encode_coin_mask(label))


def write_png_instance(
    directory: PathLike,
    stem: str,
    image: np.ndarray,
    label: np.ndarray,
    split: str = "train",
    encoding: str = "coin",
) -> dict[str, Path]:
    """Write a COIN-layout pair ``<split>/image/<stem>.png`` + ``<split>/mask/<stem>.png``.

    Args:
        encoding: ``"coin"`` (RGB, id = B*256+G), ``"gray"`` (8/16-bit single-channel ids) or ``"binary"`` (0/255).
    """
    directory = Path(directory) / split
    img = write_image(directory / "image" / f"{stem}.png", np.asarray(image))
    mask_path = directory / "mask" / f"{stem}.png"
    if encoding == "coin":
        mask = write_coin_png_mask(mask_path, label)
    elif encoding == "gray":
        mask = write_label(mask_path, label)
    elif encoding == "binary":
        mask = write_image(mask_path, (np.asarray(label) > 0).astype(np.uint8) * 255)
    else:
        raise ValueError(f"encoding must be 'coin', 'gray' or 'binary', got {encoding!r}")
    return {"image": img, "label": mask}


def write_tnbc(
    directory: PathLike, stem: str, image: np.ndarray, label: np.ndarray, binary: bool = True
) -> dict[str, Path]:
    """Write a TNBC pair: ``Slide_<pp>/<stem>.png`` (RGB) + ``GT_<pp>/<stem>.png`` with ``stem = "<pp>_<k>"``.

    The real TNBC ground truth is a binary 0/255 PNG (``binary=True``; the reader turns it into connected
    components, so touching instances merge). ``binary=False`` writes 8/16-bit instance ids instead.
    """
    patient = stem.split("_")[0]
    directory = Path(directory)
    img = write_image(directory / f"Slide_{patient}" / f"{stem}.png", np.asarray(image))
    gt_path = directory / f"GT_{patient}" / f"{stem}.png"
    if binary:
        gt = write_image(gt_path, (np.asarray(label) > 0).astype(np.uint8) * 255)
    else:
        gt = write_label(gt_path, label)
    return {"image": img, "label": gt}


# ------------------------------------------------------------------------------------------------------ LIVECell
def write_livecell(
    directory: PathLike,
    items: Sequence[Mapping[str, Any]],
    split: str = "train",
    nested: bool = True,
    annotations_as_dict: bool = True,
) -> dict[str, Path]:
    """Write LIVECell-style COCO annotations and 8-bit tif images.

    Args:
        directory: dataset root (holds ``annotations/`` and ``images/``).
        items: one mapping per image with ``image`` ``(H, W)`` uint8, ``label`` ``(H, W)`` instance ids, optional
            ``cell_line`` (default ``"A172"``) and ``file_name`` (default
            ``"<line>_Phase_A7_1_00d00h00m_<k>.tif"``; the cell line is its prefix before the first ``_``).
        split: ``"train"``, ``"val"`` or ``"test"``: json ``livecell_coco_<split>.json``; images go to
            ``livecell_test_images`` for test, else ``livecell_train_val_images``.
        nested: put images in a ``<cell line>/`` sub-folder (as in the LIVECell release) or flat.
        annotations_as_dict: the real LIVECell files store ``annotations`` as ``{"<id>": {...}}`` (which plain
            pycocotools cannot load); ``False`` writes a standard COCO list.

    Returns:
        ``{"annotation": json path, "images": image folder}``.
    """
    directory = Path(directory)
    img_root = directory / "images" / ("livecell_test_images" if split == "test" else "livecell_train_val_images")
    images, anns = [], []
    ann_id = 1
    for k, item in enumerate(items, start=1):
        line = str(item.get("cell_line", "A172"))
        name = str(item.get("file_name", f"{line}_Phase_A7_1_00d00h00m_{k}.tif"))
        image = np.asarray(item["image"])
        write_image(img_root / (f"{name.split('_')[0]}/{name}" if nested else name), image)
        h, w = image.shape[:2]
        images.append({"id": k, "file_name": name, "width": int(w), "height": int(h),
                       "original_filename": name.replace(".tif", ".png"), "url": ""})
        for _, poly in label_to_polygons(np.asarray(item["label"])):
            xy = poly[:, ::-1] + 0.5  # pixel-centre (y, x) -> COCO pixel-corner (x, y)
            seg = [round(float(v), 2) for v in xy.reshape(-1)]
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            area = 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))))
            anns.append({"id": ann_id, "image_id": k, "category_id": 1, "segmentation": [seg], "area": area,
                         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0})
            ann_id += 1
    data = {
        "info": {"description": "LIVECell-format annotations written by monai_ext", "version": "1.0"},
        "licenses": [],
        "categories": [{"id": 1, "name": "cell", "supercategory": "cell"}],
        "images": images,
        "annotations": {str(a["id"]): a for a in anns} if annotations_as_dict else anns,
    }
    js = _prep(directory / "annotations" / "LIVECell" / f"livecell_coco_{split}.json")
    js.write_text(json.dumps(data))
    return {"annotation": js, "images": img_root}


# ---------------------------------------------------------------------------------------------------------- A431
def write_a431(
    directory: PathLike,
    train_items: Sequence[Mapping[str, Any]] = (),
    test_items: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> dict[str, Path]:
    """Write the A431 layout: ``train.json`` + ``train/img_<k>.tif`` (+ ``train/mask_<k>.tif``), and
    ``test/img_<k>.tif`` + ``test/masks_<k>.tif``.

    Args:
        train_items: mappings with ``image`` ``(H, W[, C])``, ``locations`` ``(N, 2)`` (y, x) and optional ``mask``.
            ``train.json`` is a list of ``{"image_file", "mask_file"?, "locations": [[y, x], ...], "img_id"}`` with
            paths relative to ``directory``.
        test_items: ``(image, instance mask)`` pairs.

    Returns:
        ``{"train_json": path, "train": folder, "test": folder}``.
    """
    directory = Path(directory)
    entries = []
    for k, item in enumerate(train_items):
        entry: dict[str, Any] = {"image_file": f"train/img_{k:04d}.tif"}
        write_image(directory / entry["image_file"], np.asarray(item["image"]))
        if item.get("mask") is not None:
            entry["mask_file"] = f"train/mask_{k:04d}.tif"
            write_label(directory / entry["mask_file"], np.asarray(item["mask"]))
        entry["locations"] = np.asarray(item["locations"], np.float64).reshape(-1, 2).tolist()
        entry["img_id"] = k
        entries.append(entry)
    js = _prep(directory / "train.json")
    js.write_text(json.dumps(entries))
    for k, (image, mask) in enumerate(test_items):
        write_image(directory / "test" / f"img_{k:04d}.tif", np.asarray(image))
        write_label(directory / "test" / f"masks_{k:04d}.tif", np.asarray(mask))
    return {"train_json": js, "train": directory / "train", "test": directory / "test"}


# ------------------------------------------------------------------------------------------------------------ EM
def write_em_volume(path: PathLike, vol: np.ndarray, fmt: str | None = None, key: str = "raw") -> Path:
    """Write a volume ``(D, H, W)`` as a multi-page tif (one page per slice) or as an h5 dataset.

    Args:
        fmt: ``"tif"`` or ``"h5"``; ``None`` picks from the suffix (``.h5``/``.hdf5``/``.hdf`` -> h5).
        key: h5 dataset name (``raw`` / ``label`` / MitoEM's ``main``); an existing file gets the key added, so
            image and label can share one h5. Chunks are one slice, so slice reads stay cheap.
    """
    path = _prep(path)
    vol = np.asarray(vol)
    if fmt is None:
        fmt = "h5" if path.suffix.lower() in (".h5", ".hdf5", ".hdf") else "tif"
    if fmt == "tif":
        import tifffile

        tifffile.imwrite(path, vol, photometric="minisblack")
    elif fmt == "h5":
        import h5py

        with h5py.File(path, "a") as f:
            if key in f:
                del f[key]
            chunks = (1,) + vol.shape[1:] if vol.ndim >= 3 and vol.size else None
            f.create_dataset(key, data=vol, chunks=chunks)
    else:
        raise ValueError(f"fmt must be 'tif' or 'h5', got {fmt!r}")
    return path


def write_em_slices(folder: PathLike, vol: np.ndarray, prefix: str = "", ext: str = ".png", digits: int = 4) -> Path:
    """Write a volume ``(D, H, W)`` as a folder of 2D slices ``<prefix><z:0digits><ext>`` (MitoEM ``im/im0000.png``,
    VNC ``raw/00.tif``). Integer label volumes with ids > 65535 need ``ext=".tif"``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for z, sl in enumerate(np.asarray(vol)):  # one file per slice
        write_image(folder / f"{prefix}{z:0{digits}d}{ext}", sl)
    return folder


def write_points(
    path: PathLike, points: np.ndarray, fmt: str | None = None, shape: Sequence[int] | None = None
) -> Path:
    """Write sparse point labels.

    Args:
        points: ``(N, 2)`` (y, x) or ``(N, 3)`` (z, y, x) pixel coordinates.
        fmt: ``"png"`` (uint8 image of ``shape`` (H, W), 255 at the rounded points, 0 elsewhere; 2D only), ``"csv"``
            (header ``y,x`` or ``z,y,x``) or ``"json"`` (``{"axes": "yx", "points": [[y, x], ...]}``);
            ``None`` picks from the suffix.
        shape: image shape, required for png.
    """
    path = _prep(path)
    pts = np.asarray(points, np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2 if shape is None or len(shape) == 2 else 3)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"points must be (N, 2) or (N, 3), got {pts.shape}")
    fmt = fmt or path.suffix.lower().lstrip(".")
    axes = "yx" if pts.shape[1] == 2 else "zyx"
    if fmt == "png":
        if shape is None or len(shape) != 2 or pts.shape[1] != 2:
            raise ValueError("png points need 2D points and shape=(H, W)")
        img = np.zeros(tuple(shape), np.uint8)
        idx = np.rint(pts).astype(np.int64)
        img[idx[:, 0], idx[:, 1]] = 255
        write_image(path, img)
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(axes))
            w.writerows(pts.tolist())
    elif fmt == "json":
        path.write_text(json.dumps({"axes": axes, "points": pts.tolist()}))
    else:
        raise ValueError(f"fmt must be 'png', 'csv' or 'json', got {fmt!r}")
    return path


# --------------------------------------------------------------------------------------------------------- CVPPP
def _cvppp_label_png(path: Path, label: np.ndarray) -> Path:
    from PIL import Image

    label = np.asarray(label)
    if label.ndim != 2 or (label.size and (label.min() < 0 or label.max() > 255)):
        raise ValueError(f"{path}: CVPPP labels are 2D with ids in [0, 255]")
    img = Image.fromarray(label.astype(np.uint8))
    img.putpalette(cvppp_palette().reshape(-1).tolist())  # L -> P: the pixel values become palette indices
    _prep(path)
    img.save(path)
    return path


def write_cvppp(
    directory: PathLike, stem: str, rgb: np.ndarray, label: np.ndarray | None, fg: bool = True, alpha: bool = True
) -> dict[str, Path]:
    """Write a CVPPP A1 sample: ``<stem>_rgb.png``, ``<stem>_label.png`` (palette PNG, index = leaf id, fixed
    :func:`~monai_ext.data.readers.codecs.cvppp_palette`) and ``<stem>_fg.png`` (0/1 foreground, mode L).

    Args:
        directory: the ``A1`` folder (e.g. ``root/train/A1``).
        stem: ``"plant001"`` etc.
        rgb: ``(H, W, 3)`` uint8; written as RGBA with an opaque alpha when ``alpha`` (like the release).
        label: ``(H, W)`` leaf ids 0..255, or ``None`` for an unlabelled (test) image.
    """
    directory = Path(directory)
    rgb = np.asarray(rgb)
    if alpha and rgb.ndim == 3 and rgb.shape[-1] == 3:
        rgb = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    out = {"image": write_image(directory / f"{stem}_rgb.png", rgb)}
    if label is not None:
        out["label"] = _cvppp_label_png(directory / f"{stem}_label.png", label)
        if fg:
            out["fg"] = write_image(directory / f"{stem}_fg.png", (np.asarray(label) > 0).astype(np.uint8))
    return out


def write_cvppp_h5(
    directory: PathLike, items: Iterable[Mapping[str, Any]], subset: str = "A1", split: str = "training"
) -> dict[str, Path]:
    """Write the CVPPP2017 h5 pair ``CVPPP2017_<split>_images.h5`` (``<subset>/<name>/rgb`` RGBA uint8) and
    ``CVPPP2017_<split>_truth.h5`` (``<subset>/<name>/label`` uint8 ids, ``fg`` 0/1, ``count``).

    Args:
        items: mappings with ``name`` (``"plant001"``), ``rgb`` ``(H, W, 3)`` uint8 and optional ``label``.
        split: ``"training"`` or ``"testing"`` (no truth file is written when no item has a label).
    """
    import h5py

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    img_path = directory / f"CVPPP2017_{split}_images.h5"
    truth_path = directory / f"CVPPP2017_{split}_truth.h5"
    items = list(items)
    with h5py.File(img_path, "a") as f:
        for it in items:
            rgb = np.asarray(it["rgb"], np.uint8)
            rgba = np.concatenate([rgb[..., :3], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
            g = f.require_group(f"{subset}/{it['name']}")
            if "rgb" in g:
                del g["rgb"]
            g.create_dataset("rgb", data=rgba)
    out = {"images": img_path}
    if any(it.get("label") is not None for it in items):
        with h5py.File(truth_path, "a") as f:
            for it in items:
                if it.get("label") is None:
                    continue
                lab = np.asarray(it["label"])
                g = f.require_group(f"{subset}/{it['name']}")
                for k in ("label", "fg", "count"):
                    if k in g:
                        del g[k]
                g.create_dataset("label", data=lab.astype(np.uint8))
                g.create_dataset("fg", data=(lab > 0).astype(np.uint8))
                g.create_dataset("count", data=np.int64(len(np.unique(lab[lab > 0]))))
        out["truth"] = truth_path
    return out


# ------------------------------------------------------------------------------------------------ plain folders
def write_folder_pair(
    directory: PathLike,
    stem: str,
    image: np.ndarray,
    label: np.ndarray | None = None,
    image_ext: str = ".tif",
    label_ext: str = ".tif",
    split: str | None = None,
) -> dict[str, Path]:
    """Write ``[<split>/]images/<stem><image_ext>`` and (if given) ``[<split>/]labels/<stem><label_ext>``."""
    directory = Path(directory) / split if split else Path(directory)
    out = {"image": write_image(directory / "images" / f"{stem}{image_ext}", np.asarray(image))}
    if label is not None:
        out["label"] = write_label(directory / "labels" / f"{stem}{label_ext}", np.asarray(label))
    return out
