# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Time every instance metric of ``monai_ext.metrics`` on large synthetic nucleus images, on one CPU core.

Cases (``--cases``): ``1024x1024`` with ~500 instances and ``2048x2048`` with ~2000 instances (targets of
the metrics issue), plus a 3D volume.  The prediction is the GT with jittered boundaries, a one-pixel
shift, dropped / merged / split / spurious instances and random non-contiguous ids, so every code path
(many overlapping pairs, Hungarian components, large ids) is exercised.

Reported per case: median wall time (ms) over ``--repeats`` runs of the overlap alone, of each metric
family from a ready overlap, of ``instance_metrics`` with every default metric (the headline number: one
overlap + all metrics), of the AJI adjacency breakdown and of the CKS ranked AP (10 thresholds); and the
peak memory traced during ``instance_metrics`` (numpy allocations, via ``tracemalloc``) in MB and bytes
per pixel.  ``--compare-monai`` also times ``monai.metrics.compute_panoptic_quality`` once (seconds).

Usage::

    python scripts/benchmark_metrics.py                  # pins itself to one core, single-threaded
    taskset -c 0 python scripts/benchmark_metrics.py --repeats 11 --json metrics_bench.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from monai_ext.metrics import (  # noqa: E402
    DEFAULT_METRICS,
    InstanceMetricSpec,
    aji_breakdown,
    compute_overlap,
    instance_metrics,
    ranked_average_precision,
)

FAMILIES = {
    "aji": ["aji"],
    "aji_plus": ["aji_plus"],
    "pq (pq, dq, sq)": ["pq", "dq", "sq"],
    "dsb_ap (3 thresholds)": ["dsb_ap"],
    "sbd": ["sbd"],
    "are": ["are"],
    "fg (dice, iou, miou)": ["fg_dice", "fg_iou", "miou"],
    "dice2": ["dice2"],
    "instance_dice": ["instance_dice"],
}


def synthetic_pair(shape: tuple[int, ...], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """GT nuclei (touching in clusters) and a realistic imperfect prediction with scores."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    dist, idx = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    owner = seeds[tuple(idx)]
    ndim = len(shape)
    unit = 4.0 / 3.0 * np.pi if ndim == 3 else np.pi
    radius = (0.55 * size / n / unit) ** (1.0 / ndim) * rng.uniform(0.7, 1.3, n + 1)
    gt = np.where(dist <= radius[owner], owner, 0).astype(np.int32)
    # prediction: smooth random displacement (jittered boundaries) + global one-pixel shift
    coords = np.indices(shape)
    for d in range(ndim):
        field = ndimage.gaussian_filter(rng.normal(size=shape), 3.0) * 12.0
        coords[d] = np.clip(coords[d] + np.rint(field).astype(np.intp) + 1, 0, shape[d] - 1)
    pred = gt[tuple(coords)]
    n_ids = int(pred.max()) + 1
    new = np.arange(n_ids, dtype=np.int64)
    new[rng.random(n_ids) < 0.05] = 0  # missed
    merge = np.flatnonzero(rng.random(n_ids) < 0.05)
    new[merge] = new[np.clip(merge + 1, 0, n_ids - 1)]  # merged with a neighbour id (often adjacent)
    new[0] = 0
    pred = new[pred]
    # split 5 % of the instances along their centroid's first axis
    ids = np.arange(n_ids)
    with np.errstate(invalid="ignore", divide="ignore"):  # ids emptied above have no centre
        centre = np.asarray(ndimage.center_of_mass(np.ones(shape), pred, ids))
    split = rng.random(n_ids) < 0.05
    split[0] = False
    lower = split[pred] & (coords[0] < np.nan_to_num(centre[:, 0])[pred])
    pred = np.where(lower, pred + n_ids, pred)
    # spurious detections in the background
    fp = np.zeros(shape, dtype=np.int64)
    fp[tuple(rng.integers(0, s, max(1, n // 20)) for s in shape)] = np.arange(1, max(1, n // 20) + 1)
    fp = ndimage.grey_dilation(fp, size=(5,) * ndim)
    pred = np.where((pred == 0) & (fp > 0), fp + 2 * n_ids, pred)
    # random non-contiguous ids up to 2**20
    present = np.unique(pred)
    lut = np.zeros(int(present.max()) + 1, dtype=np.int64)
    lut[present[present > 0]] = rng.choice(np.arange(1, 1 << 20), size=int((present > 0).sum()), replace=False)
    pred = lut[pred].astype(np.int32)
    scores = {int(i): float(s) for i, s in zip(np.unique(pred)[1:], rng.random(len(np.unique(pred)) - 1))}
    return gt, pred, scores


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def run_case(shape: tuple[int, ...], n: int, repeats: int, compare_monai: bool) -> dict[str, Any]:
    gt, pred, scores = synthetic_pair(shape, n)
    ov = compute_overlap(gt, pred)
    all_names = list(DEFAULT_METRICS) + ["miou"]
    res: dict[str, Any] = {
        "shape": "x".join(map(str, shape)),
        "gt_instances": ov.n_gt,
        "pred_instances": ov.n_pred,
        "overlapping_pairs": ov.n_pairs,
        "ms": {},
    }
    ms = res["ms"]
    ms["overlap (sort, default)"] = median_ms(lambda: compute_overlap(gt, pred), repeats)
    ms["overlap (LUT + bincount)"] = median_ms(lambda: compute_overlap(gt, pred, method="bincount"), repeats)
    for label, names in FAMILIES.items():
        spec = InstanceMetricSpec(names)
        # a fresh copy each run so that cached per-pair IoU / unions are recomputed and counted
        ms[f"  {label} from overlap"] = median_ms(
            lambda spec=spec: spec.finalize(spec.statistics(dataclasses.replace(ov))), repeats
        )
    ms["ALL metrics: overlap + all default metrics"] = median_ms(lambda: instance_metrics(gt, pred, all_names), repeats)
    ms["aji_breakdown (adjacency + AJI groups)"] = median_ms(lambda: aji_breakdown(gt, pred), repeats)
    ms["ranked AP, 10 thresholds (overlap incl.)"] = median_ms(
        lambda: ranked_average_precision([(gt, pred, scores)]), repeats
    )
    tracemalloc.start()
    instance_metrics(gt, pred, all_names)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    res["peak_mb"] = peak / 2**20
    res["peak_bytes_per_pixel"] = peak / gt.size
    if compare_monai:
        import torch
        from monai.metrics import compute_panoptic_quality

        torch.set_num_threads(1)
        t0 = time.perf_counter()
        compute_panoptic_quality(torch.as_tensor(pred), torch.as_tensor(gt))
        ms["monai compute_panoptic_quality (PQ only, 1 run)"] = 1e3 * (time.perf_counter() - t0)
    res["values"] = instance_metrics(gt, pred, all_names)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="1024x1024:500,2048x2048:2000,64x256x256:1500",
                        help="comma-separated SHAPE:INSTANCES, shape as HxW or DxHxW")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin to this core (default: the first core this process may use)")
    parser.add_argument("--compare-monai", action="store_true", help="also time MONAI compute_panoptic_quality")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    results = []
    for case in args.cases.split(","):
        shape_s, n_s = case.split(":")
        shape = tuple(int(s) for s in shape_s.split("x"))
        res = run_case(shape, int(n_s), args.repeats, args.compare_monai)
        results.append(res)
        print(f"\n== {res['shape']}: {res['gt_instances']} GT, {res['pred_instances']} predicted instances, "
              f"{res['overlapping_pairs']} overlapping pairs; median of {args.repeats} runs, 1 core")
        for label, value in res["ms"].items():
            print(f"  {label:<52s} {value:9.1f} ms")
        print(f"  {'peak traced memory (instance_metrics, all)':<52s} {res['peak_mb']:9.1f} MB "
              f"({res['peak_bytes_per_pixel']:.1f} B/pixel)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
