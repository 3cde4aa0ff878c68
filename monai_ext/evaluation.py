# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Evaluate a folder of predicted instance label images against a ground-truth dataset in any supported format."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.errors import DataError
from monai_ext.utils import atomic_write_bytes, progress

__all__ = ["read_label_image", "find_predictions", "evaluate_folder", "markdown_table"]

logger = logging.getLogger(__name__)

_LABEL_EXT = (".tif", ".tiff", ".png", ".npy", ".nii.gz", ".nii", ".h5")


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read an integer instance label image (tif, png, npy, nii, h5 dataset ``label``) without rescaling."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".tif", ".tiff")):
            import tifffile

            arr = tifffile.imread(path)
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
        elif name.endswith(".npy"):
            arr = np.load(path)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(path)).dataobj)
        elif name.endswith(".h5"):
            import h5py

            with h5py.File(path, "r") as fh:
                arr = fh["label"][()]
        else:
            raise DataError(f"unsupported label file type (use one of {_LABEL_EXT})", path)
    except DataError:
        raise
    except Exception as exc:  # unreadable / truncated file
        raise DataError(f"cannot read label image ({exc})", path) from exc
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"label image must hold integers, found {arr.dtype}", path)
    return arr


def find_predictions(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """Map sample id -> prediction file in ``pred_dir`` (``<id>.tif`` etc.; ``*_scores.json`` are side files)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError("prediction folder does not exist", pred_dir)
    out: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        name = p.name
        for ext in _LABEL_EXT:
            if name.lower().endswith(ext):
                sid = name[: -len(ext)]
                for suffix in ("_pred", "_label", "_mask"):
                    sid = sid[: -len(suffix)] if sid.endswith(suffix) else sid
                if sid in out:
                    raise DataError(f"two prediction files for sample {sid!r}: {out[sid].name}, {name}", pred_dir)
                out[sid] = p
                break
    if not out:
        raise DataError("no prediction files (.tif/.png/.npy/.nii.gz/.h5)", pred_dir)
    return out


def _scores_of(path: Path) -> dict[int, float] | None:
    base = path.name
    for ext in _LABEL_EXT:
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    side = path.with_name(base + "_scores.json")
    if not side.exists():
        return None
    return {int(k): float(v) for k, v in json.loads(side.read_text()).items()}


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (floats with 4 decimals)."""
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def evaluate_folder(
    pred_dir: str | os.PathLike,
    gt: str | os.PathLike,
    gt_format: str | None = None,
    split: str | None = None,
    metrics: Sequence[str] | None = None,
    mode: str = "per_image",
    output_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
    reader_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against the ground truth of the dataset at ``gt``.

    Ground truth is read with :func:`monai_ext.data.get_reader` (``gt_format=None`` detects the format: MoNuSeg,
    TNBC/COIN PNG, LIVECell, A431, EM, CVPPP, plain folders); predictions are matched by sample id. When
    predictions carry ``<id>_scores.json`` the CKS ranked mAP / AP50 / AP75 (pooled) are added.

    Args:
        pred_dir: folder of ``<id>.tif`` (or png/npy/nii/h5) instance label images.
        gt: dataset folder.
        gt_format: reader format name (``None``: detect).
        split: dataset split to read (e.g. ``"test"``).
        metrics: metric names of :func:`monai_ext.metrics.instance_metrics` (default set if ``None``).
        mode: ``"per_image"`` (mean over images, the paper convention of COIN/HoVer-Net) or ``"pooled"``.
        output_dir: if given, write ``metrics_per_image.csv``, ``metrics.json`` and ``metrics.md`` there.
        allow_missing: score a missing prediction as an empty image (default: error naming the ids).
        reader_options: extra keyword arguments of the reader.

    Returns:
        ``{"summary": {...}, "per_image": [...], "n_images": int, "markdown": str}``.
    """
    from monai_ext.data import get_reader
    from monai_ext.metrics import aggregate_metrics, instance_metrics, ranked_average_precision

    reader = get_reader(gt_format, gt, **(reader_options or {}))
    records = reader.datalist(split)
    preds = find_predictions(pred_dir)
    missing = [str(r["id"]) for r in records if str(r["id"]) not in preds]
    if missing and not allow_missing:
        raise DataError(f"no prediction for {len(missing)} ground-truth samples: {missing[:10]}", pred_dir)
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    ranked: list[tuple[np.ndarray, np.ndarray, dict[int, float]]] = []
    for rec in progress(records, "evaluate"):
        sid = str(rec["id"])
        sample = reader.load(rec)
        if "label" not in sample:
            raise DataError(f"sample {sid!r} has no ground-truth label", rec.get("image"))
        gt_lab = np.asarray(sample["label"])[0]
        if sid in preds:
            pred = read_label_image(preds[sid])
            pred = pred.reshape(pred.shape[-gt_lab.ndim:]) if pred.ndim > gt_lab.ndim and pred.shape[0] == 1 else pred
            if pred.shape != gt_lab.shape:
                raise DataError(f"prediction shape {pred.shape} != ground truth shape {gt_lab.shape}", preds[sid])
            scores = _scores_of(preds[sid])
        else:
            pred, scores = np.zeros_like(gt_lab), None
        gt_lab = np.where(gt_lab < 0, 0, gt_lab)  # ignore marks in GT count as background here
        rows.append({"id": sid, **instance_metrics(gt_lab, pred, metrics)})
        pairs.append((gt_lab, pred))
        if scores is not None:
            ranked.append((gt_lab, pred, scores))
    summary = aggregate_metrics(pairs, mode=mode, metrics=metrics) if mode == "pooled" else aggregate_metrics(
        [{k: v for k, v in r.items() if k != "id"} for r in rows], mode="per_image"
    )
    if ranked and len(ranked) == len(rows):
        from monai_ext.metrics import COCO_THRESHOLDS

        ap = ranked_average_precision(ranked, COCO_THRESHOLDS)
        summary.update({"ranked_ap50": float(ap[0]), "ranked_ap75": float(ap[5]), "ranked_map": float(np.mean(ap))})
    columns = ["id", *[k for k in rows[0] if k != "id"]]
    md = markdown_table([*rows, {"id": f"**{mode} mean**", **summary}], columns)
    result = {"summary": summary, "per_image": rows, "n_images": len(rows), "mode": mode, "markdown": md}
    if output_dir is not None:
        out = Path(output_dir)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out / "metrics_per_image.csv", buf.getvalue().encode())
        atomic_write_bytes(out / "metrics.json", json.dumps({**summary, "n_images": len(rows)}, indent=2).encode())
        atomic_write_bytes(out / "metrics.md", md.encode())
    return result
