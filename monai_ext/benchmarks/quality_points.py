# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Quality (and inference speed) benchmark of the point_fluorescence bundle (CKS / LACSS).

Data: held-out synthetic fluorescence tiles (:func:`monai_ext.data.synthetic.synth_fluorescence`, cytoplasm channel as
the model input). The point labels are the generator's blob detections on the *nuclei channel* (A431 protocol: some
cells have no point, some two, debris gives spurious ones, points sit on the nucleus, not on the centroid), never the
ground truth. The supervised upper bound is the same principal model trained with the ground-truth masks.

Rows (paper Tab. III, V, VI): CKS with the paper's losses and defaults except that ``L_B`` trains only the border
net (``border_start_steps`` = all steps: on these short CPU schedules ``L_B`` on the principal shrinks the masks),
the supervised upper bound, ablations (``L_B`` on the principal from step 1 as the paper, no prior (pi = 0),
cross-entropy consistency for the principal (``L_S``) and for the collaborator (``L_M``)), and an untrained model. Metrics: the
CKS ranked AP50 / AP75 / mAP (strict IoU >, no smoothing, predictions with score >= 0.2), area-weighted Dice
(score >= 0.5), DSB AP50 and the median predicted / ground-truth area of the matched cells (mask extent: the
point-supervised masks of short schedules are too small, see the bundle documentation).

``run(out_dir, quick=True)`` is the CI version: CKS with a short schedule vs. an untrained model.
:func:`time_inference` measures inference images/s at 520 x 704 and the peak memory in a fresh process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run", "make_data", "train_model", "evaluate_model", "matched_area_ratio", "time_inference"]

logger = logging.getLogger(__name__)

#: principal-model settings shared by every row (the bundle defaults)
NET_KW: dict[str, Any] = {"in_channels": 1, "backbone": "convnext_atto", "fpn_channels": 64, "crop_size": 96}

#: name of the main CKS row: paper losses and defaults, except that ``L_B`` trains only the border net
CKS_ROW = "CKS (paper losses; L_B trains the border net only)"


def make_data(n: int, seed: int, shape: tuple[int, int] = (256, 256)) -> list[dict[str, Any]]:
    """``n`` synthetic fluorescence samples (cytoplasm channel, blob-detected points, GT labels)."""
    from monai_ext.data.synthetic import make_dataset

    data = make_dataset("fluorescence", n, seed=seed, shape=shape)
    for s in data:
        s["meta"] = {"id": s["meta"]["id"], "dataset": "synthetic_fluorescence", "cell_line": ""}
    return data


def _train_transforms(mode: str, patch: int, max_points: int) -> Any:
    from monai.transforms import (Compose, DeleteItemsd, EnsureTyped, NormalizeIntensityd, RandScaleIntensityd,
                                  RandShiftIntensityd)

    from monai_ext.transforms.points import (PadPointsd, PointsFromLabeld, RandPointCropd, RandPointFlipRotated,
                                             RandPointZoomd, SizePriord)

    t: list[Any] = [DeleteItemsd(keys=["nuclei", "nuclei_label", "gt_points"])]
    if mode == "supervised":
        t.append(PointsFromLabeld("label"))  # ground-truth centroids + ids
    else:
        t.append(DeleteItemsd(keys=["label"]))
    t += [
        NormalizeIntensityd("image", channel_wise=True),
        RandPointZoomd(["image", "label"], 0.85, 1.15),
        RandPointCropd(["image", "label"], patch),
        RandPointFlipRotated(["image", "label"]),
        RandScaleIntensityd("image", factors=0.4, prob=0.5),
        RandShiftIntensityd("image", offsets=0.3, prob=0.5),
        SizePriord(20.0),
        PadPointsd("points", max_points),
        EnsureTyped(["image", "label", "points", "points_valid", "point_ids", "prior_d", "class_index"],
                    track_meta=False, allow_missing_keys=True),
    ]
    return Compose(t)


def train_model(train: list[dict[str, Any]], mode: str = "cks", steps: int = 400, seed: int = 0,
                cks_kwargs: dict[str, Any] | None = None, patch: int = 128, batch_size: int = 4,
                lr: float = 1e-3, net_kwargs: dict[str, Any] | None = None, warmup_steps: int = 0,
                callbacks: dict[int, Any] | None = None, border_start_steps: int = 0) -> torch.nn.Module:
    """Train a principal model with :class:`~monai_ext.engines.cks.CKSTrainer` for ``steps`` iterations (CPU).

    ``callbacks``: ``{iteration: fn(network)}`` called after that iteration (e.g. intermediate evaluations).
    ``border_start_steps``: see :class:`~monai_ext.engines.cks.CKSTrainer` (0: paper).
    """
    from monai.data import CacheDataset, DataLoader

    from monai_ext.engines.cks import CKSTrainer
    from monai_ext.losses.cks import CKSLoss
    from monai_ext.losses.detection import PointDetectionLoss
    from monai_ext.networks.collaborator import Collaborator
    from monai_ext.networks.lacss import LacssNet
    from monai_ext.utils import set_seed

    set_seed(seed)
    ds = CacheDataset(train, _train_transforms(mode, patch, 512), cache_rate=1.0, num_workers=0, progress=False)
    ds.transform.set_random_state(seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    net = LacssNet(**{**NET_KW, **(net_kwargs or {})})
    col = Collaborator(NET_KW["in_channels"])
    params = list(net.parameters()) + (list(col.parameters()) if mode == "cks" else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    epochs = max(1, int(np.ceil(steps / max(1, len(loader)))))
    trainer = CKSTrainer(
        device=torch.device("cpu"), max_epochs=epochs, epoch_length=None, train_data_loader=loader, network=net,
        optimizer=opt, collaborator=col if mode == "cks" else None, detection_loss=PointDetectionLoss(),
        cks_loss=CKSLoss(**(cks_kwargs or {})) if mode == "cks" else None, mode=mode, warmup_steps=warmup_steps,
        border_start_steps=border_start_steps,
    )

    @trainer.on(__import__("ignite.engine", fromlist=["Events"]).Events.ITERATION_COMPLETED)
    def _stop(engine: Any) -> None:
        fn = (callbacks or {}).get(engine.state.iteration)
        if fn is not None:
            fn(net)
            net.train()
        if engine.state.iteration >= steps:
            engine.terminate()

    trainer.run()
    return net.eval()


def matched_area_ratio(label: np.ndarray, pred: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """Predicted / ground-truth area of every ground-truth cell matched by a prediction with IoU > ``min_iou``
    (``>= 0.5``, so the match is unique), in ground-truth order: a diagnostic of mask extent (systematically small
    or large masks), from the project's one sparse overlap table."""
    from monai_ext.metrics import compute_overlap

    if min_iou < 0.5:
        raise ValueError(f"min_iou must be >= 0.5 for a unique match, got {min_iou}")
    ov = compute_overlap(np.asarray(label).astype(np.int64), np.asarray(pred).astype(np.int64))
    hit = ov.pair_iou > min_iou
    return ov.pred_areas[ov.pair_pred[hit]] / ov.gt_areas[ov.pair_gt[hit]]


def evaluate_model(net: torch.nn.Module, test: list[dict[str, Any]], score_threshold: float = 0.2) -> dict[str, float]:
    """The CKS table of ``net`` on ``test`` (AP with scores >= 0.2, Dice with scores >= 0.5, as the paper), plus
    ``area_ratio``: the median predicted / ground-truth area of the cells matched at IoU > 0.5."""
    from monai.transforms import NormalizeIntensity

    from monai_ext.handlers.cks_metrics import cks_metrics
    from monai_ext.postprocess.points import InstancesFromPredd

    old = net.score_threshold
    net.score_threshold = score_threshold
    norm = NormalizeIntensity(channel_wise=True)
    post = InstancesFromPredd("pred", min_area=10, group_from=None)
    items = []
    ratios: list[np.ndarray] = []
    try:
        for s in test:
            x = torch.as_tensor(np.asarray(norm(np.array(s["image"], dtype=np.float32, copy=True)))).float()[None]
            with torch.no_grad():
                pred = net.predict(x)[0]
            out = post({"pred": pred})
            items.append((s["label"], out["pred"], out["scores"], ""))
            ratios.append(matched_area_ratio(np.asarray(s["label"])[0], np.asarray(out["pred"])[0]))
    finally:
        net.score_threshold = old
    metrics = cks_metrics(items, min_score=0.2, dice_min_score=0.5, groups=False)
    allr = np.concatenate(ratios) if ratios else np.zeros(0)
    metrics["area_ratio"] = float(np.median(allr)) if allr.size else float("nan")
    return metrics


_TIMING_SCRIPT = r"""
import json, resource, sys, time, torch
from monai_ext.networks.lacss import LacssInference
from monai_ext.data.synthetic import synth_fluorescence
from monai.transforms import NormalizeIntensity
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
net = LacssInference(**cfg["net"]).eval()
if cfg["weights"]:
    net.load_state_dict(torch.load(cfg["weights"], map_location="cpu", weights_only=True))
img = synth_fluorescence(cfg["seed"], tuple(cfg["size"]))["image"]
x = torch.as_tensor(NormalizeIntensity(channel_wise=True)(img)).float()[None]
times = []
with torch.inference_mode():
    y = net(x)
    for _ in range(cfg["n"]):
        t0 = time.perf_counter()
        y = net(x)
        times.append(time.perf_counter() - t0)
times.sort()
med = times[len(times) // 2]
print(json.dumps({"seconds_per_image": med, "images_per_s": 1.0 / med, "best_seconds_per_image": times[0],
                  "cells": int(y[0, 0].max()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def time_inference(weights: str | os.PathLike | None = None, size: tuple[int, int] = (520, 704), n_images: int = 5,
                   threads: int | None = None, seed: int = 0, net_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inference speed of the LACSS network on one ``size`` synthetic image, in a fresh CPU process.

    Returns ``{"seconds_per_image"`` (median), ``"images_per_s"``, ``"best_seconds_per_image"``, ``"cells"``,
    ``"peak_rss_mb"``, ``"threads"``, ``"size"}`` (peak RSS of the whole process: model, image, outputs). Use trained ``weights`` for realistic cell counts (random weights detect
    nothing). The Cellpose comparison belongs to the repository's speed benchmark.
    """
    cfg = {"net": {**NET_KW, **(net_kwargs or {})}, "weights": str(weights) if weights else None,
           "size": list(size), "n": int(n_images), "threads": int(threads or torch.get_num_threads()), "seed": seed}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", _TIMING_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"timing process failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update({"threads": cfg["threads"], "size": list(size)})
    return res


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """The benchmark (see the module docstring); ``quick``: CI version (CKS, short schedule, vs. untrained).

    Schedules (environment overrides): ``POINTS_BENCH_STEPS`` (CKS and supervised, default 200: with the four
    ablation rows the whole benchmark took 12.2 minutes on the two-core CPU machine; quick 150) and
    ``POINTS_BENCH_ABLATION_STEPS`` (each ablation, default half; the CKS run is also evaluated at that step so the
    ablations are compared at equal training).
    """
    from monai_ext.networks.lacss import LacssNet
    from monai_ext.utils import atomic_save

    start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    n_train, n_test = (8, 3) if quick else (16, 6)
    steps = int(os.environ.get("POINTS_BENCH_STEPS", 150 if quick else 200))
    abl_steps = int(os.environ.get("POINTS_BENCH_ABLATION_STEPS", max(1, steps // 2)))
    batch, patch = (2, 128) if quick else (4, 128)
    train = make_data(n_train, seed=1000 + seed)
    test = make_data(n_test, seed=2000 + seed)
    n_pts = sum(len(s["points"]) for s in train)
    n_cells = sum(int(s["label"].max()) for s in train)
    data_desc = f"synthetic fluorescence, {n_train} train / {n_test} held-out 256x256 tiles"
    rows: list[dict[str, Any]] = []

    def add(name: str, budget: str, net: torch.nn.Module, n_steps: int, seconds: float) -> dict[str, float]:
        m = evaluate_model(net, test)
        rows.append({"method": name, "data": data_desc, "budget": budget, "steps": n_steps, "metrics": m,
                     "train_seconds": round(seconds, 1)})
        logger.info("%s: %s", name, m)
        return m

    torch.manual_seed(seed)
    add("untrained principal", "none", LacssNet(**NET_KW).eval(), 0, 0.0)
    points = "nuclei-derived points"
    t0 = time.time()
    mid: dict[str, Any] = {}

    def at_mid(net: torch.nn.Module) -> None:
        mid["metrics"] = evaluate_model(net.eval(), test)
        mid["seconds"] = time.time() - t0

    callbacks = {abl_steps: at_mid} if (not quick and abl_steps < steps) else None
    # Short CPU schedules: L_B trains the collaborator's border net only (B_p constant) for the whole run; with the
    # paper's L_B from step 1 (ablation row below) the masks shrink (the paper's collaborator learns borders only
    # late in its 90k steps).
    cks = train_model(train, "cks", steps, seed, patch=patch, batch_size=batch, callbacks=callbacks,
                      border_start_steps=steps)
    add(CKS_ROW, points, cks, steps, time.time() - t0)
    ours = rows[-1]["metrics"]["ap50"]
    untrained = rows[0]["metrics"]["ap50"]
    summary: dict[str, Any] = {"ours": ours, "metric": "ap50", "budget": points, "data": data_desc,
                               "paper_ratio": 0.91}
    targets: dict[str, bool] = {}
    if quick:
        dice, dice0 = rows[-1]["metrics"]["dice"], rows[0]["metrics"]["dice"]
        targets["CKS beats the untrained model by a wide margin (Dice +0.3, AP50 +0.1)"] = bool(
            dice >= dice0 + 0.3 and ours >= untrained + 0.1)
    else:
        t0 = time.time()
        sup = train_model(train, "supervised", steps, seed, patch=patch, batch_size=batch)
        add("supervised upper bound", "full masks", sup, steps, time.time() - t0)
        sup_idx = len(rows) - 1
        if mid:
            rows.append({"method": CKS_ROW, "data": data_desc, "budget": points, "steps": abl_steps,
                         "metrics": mid["metrics"], "train_seconds": round(mid["seconds"], 1)})
        for name, kw, bstart in (("ablation: L_B on the principal from step 1 (paper default)", {}, 0),
                                 ("ablation: no prior (pi = 0)", {"pi": 0.0}, abl_steps),
                                 ("ablation: CE consistency, principal (L_S)", {"consistency_s": "ce"}, abl_steps),
                                 ("ablation: CE consistency, collaborator (L_M)", {"consistency_m": "ce"}, abl_steps)):
            t0 = time.time()
            net = train_model(train, "cks", abl_steps, seed, cks_kwargs=kw, patch=patch, batch_size=batch,
                              border_start_steps=bstart)
            add(name, points, net, abl_steps, time.time() - t0)
        sup_ap = rows[sup_idx]["metrics"]["ap50"]
        summary.update({"upper_bound": sup_ap, "ratio": ours / sup_ap if sup_ap > 0 else float("nan")})
        targets["point-supervised AP50 >= 0.90 x supervised AP50"] = bool(sup_ap > 0 and ours >= 0.9 * sup_ap)
        atomic_save(cks.state_dict(), out_dir / "cks_model.pt")
        summary["speed"] = time_inference(out_dir / "cks_model.pt", n_images=5)
    lines = [
        f"Data: {data_desc}; {n_pts} training points blob-detected on the nuclei channel for {n_cells} cells "
        "(cells without a point, cells with two, debris points).",
        f"Schedule: batch {batch} x {patch}px crops, AdamW 1e-3, CPU; steps per row below. AP with score >= 0.2, "
        "Dice with score >= 0.5 (as the paper). Area ratio: median predicted / ground-truth area of the cells "
        "matched at IoU > 0.5 (mask extent).",
        "",
        "| method | budget | steps | AP50 | AP75 | mAP | Dice | DSB AP50 | area ratio | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        area = m.get("area_ratio", float("nan"))
        lines.append(f"| {r['method']} | {r['budget']} | {r['steps']} | {_fmt(m['ap50'])} | {_fmt(m['ap75'])} | "
                     f"{_fmt(m['map'])} | {_fmt(m['dice'])} | {_fmt(m['dsb_ap50'])} | {_fmt(area)} | "
                     f"{r['train_seconds']} |")
    if "ratio" in summary:
        lines += ["", f"Point-supervised / supervised AP50 = {summary['ratio']:.3f} at {steps} steps "
                      "(paper, LIVECell: 0.91)."]
    if "speed" in summary:
        sp = summary["speed"]
        lines += [f"Inference at 520x704 on CPU ({sp['threads']} threads): {sp['images_per_s']:.2f} images/s "
                  f"(median; best {1.0 / sp['best_seconds_per_image']:.2f}), {sp['cells']} cells, "
                  f"peak RSS {sp['peak_rss_mb']:.0f} MiB."]
    return {
        "method": "points",
        "rows": rows,
        "summary": summary,
        "targets": targets,
        "markdown": "\n".join(lines) + "\n",
        "seconds": time.time() - start,
    }
