# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Timing of the peers a user would pick instead: Cellpose (network + flow post-processing) and MONAI's
HoVerNet (network + HoVer-Net instance post-processing), on the same images as our bundles.

Cellpose is not a project dependency: :func:`ensure_cellpose` installs pinned wheels into a private folder
(``<cache>/bench-site``) from the package registry the first time and only puts it on ``sys.path`` here.
Random weights are used for both networks (timing only); Cellpose's flow post-processing runs on flows
computed from the ground-truth masks, so its cost is that of a realistic image, not of random flows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CELLPOSE_PINS", "ensure_cellpose", "time_cellpose", "time_hovernet", "summarise"]

CELLPOSE_PINS = (
    "cellpose==3.1.1.2",
    "numba==0.68.1",
    "llvmlite==0.50.0",
    "fastremap==1.21.0",
    "fill-voids==2.1.2",
    "opencv-python-headless==5.0.0.93",
    "natsort==8.4.0",
    "roifile==2026.2.10",
)


def summarise(times: list[float], skip_first: int = 1) -> dict[str, float]:
    """Median / quartiles / throughput of per-image times (warm-up excluded)."""
    t = np.asarray(times[skip_first:] or times, dtype=float)
    return {
        "runs": int(t.size),
        "median_s": float(np.median(t)),
        "p25_s": float(np.percentile(t, 25)),
        "p75_s": float(np.percentile(t, 75)),
        "samples_per_s": float(t.size / t.sum()),
    }


def ensure_cellpose(site: str | Path) -> bool:
    """Make ``import cellpose`` work from ``site`` (installing the pinned wheels there if needed)."""
    site = Path(site)
    if not (site / "cellpose").is_dir():
        site.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), *CELLPOSE_PINS]
        if subprocess.run(cmd).returncode != 0:
            return False
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    try:
        import cellpose  # noqa: F401
    except Exception:
        return False
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_cellpose(images: list[np.ndarray], masks: list[np.ndarray], device: torch.device) -> dict[str, Any]:
    """Cellpose 3 (CPnet ``[2,32,64,128,256]``, as the cyto models) network + ``compute_masks`` per image.

    Args:
        images: ``(H, W)`` grey images in [0, 1].
        masks: ground-truth instance masks of the same images (their flows drive the post-processing).
    """
    from cellpose import core, dynamics, resnet_torch

    net = resnet_torch.CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3).to(device).eval()
    total, net_t, post_t = [], [], []
    for img, lab in zip(images, masks):
        x = np.stack([img, np.zeros_like(img)], -1).astype(np.float32)[None]  # (1, H, W, 2): cyto + empty nuclei
        flows = dynamics.masks_to_flows(lab.astype(np.int32), device=device).astype(np.float32)
        prob = np.where(lab > 0, 5.0, -5.0).astype(np.float32)
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            core.run_net(net, x, batch_size=8, bsize=224)
        _sync(device)
        t1 = time.perf_counter()
        dynamics.compute_masks(flows, prob, niter=200, cellprob_threshold=0.0, flow_threshold=0.4, device=device)
        t2 = time.perf_counter()
        net_t.append(t1 - t0)
        post_t.append(t2 - t1)
        total.append(t2 - t0)
    out = summarise(total)
    out.update(network_median_s=float(np.median(net_t[1:] or net_t)),
               postprocess_median_s=float(np.median(post_t[1:] or post_t)), version="cellpose 3.1.1.2 (random weights)")
    return out


def time_hovernet(images: list[np.ndarray], masks: list[np.ndarray], device: torch.device) -> dict[str, Any]:
    """MONAI ``HoVerNet`` (fast mode, 256 px patches, as the model-zoo bundle) + ``HoVerNetInstanceMapPostProcessingd``.

    The network runs with random weights on the image; the post-processing runs on maps computed from the
    ground truth (``ComputeHoVerMaps``), so its cost is that of a realistic prediction.

    Args:
        images: ``(3, H, W)`` RGB images in [0, 1].
        masks: ground-truth instance masks ``(H, W)``.
    """
    from monai.apps.pathology.inferers import SlidingWindowHoVerNetInferer
    from monai.apps.pathology.transforms.post.dictionary import HoVerNetInstanceMapPostProcessingd
    from monai.networks.nets import HoVerNet
    from monai.transforms import ComputeHoVerMaps

    net = HoVerNet(mode=HoVerNet.Mode.FAST, in_channels=3, out_classes=0).to(device).eval()
    inferer = SlidingWindowHoVerNetInferer(roi_size=(256, 256), sw_batch_size=4, overlap=0.0,
                                           extra_input_padding=((256 - 164) // 2,) * 4)
    post = HoVerNetInstanceMapPostProcessingd(sobel_kernel_size=21, marker_threshold=0.4, marker_radius=2)
    hover = ComputeHoVerMaps()
    total, net_t, post_t = [], [], []
    for img, lab in zip(images, masks):
        x = torch.as_tensor(img[None], dtype=torch.float32, device=device)
        fg = torch.as_tensor(lab > 0, dtype=torch.float32)[None]
        maps = {
            "nucleus_prediction": torch.cat([4.0 * (1 - fg) - 2.0, 4.0 * fg - 2.0]),  # logits of bg / fg
            "horizontal_vertical": torch.as_tensor(hover(lab[None].astype(np.int64)), dtype=torch.float32),
        }
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            inferer(x, net)
        _sync(device)
        t1 = time.perf_counter()
        post(dict(maps))
        t2 = time.perf_counter()
        net_t.append(t1 - t0)
        post_t.append(t2 - t1)
        total.append(t2 - t0)
    res = summarise(total)
    res.update(network_median_s=float(np.median(net_t[1:] or net_t)),
               postprocess_median_s=float(np.median(post_t[1:] or post_t)),
               version="monai HoVerNet fast (random weights)")
    return res
