# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Quality benchmark of the em_mito_wda bundle: source-only, UDA, WDA (15 % points) and target-supervised.

Data: synthetic two-domain EM (:func:`monai_ext.data.synthetic.synth_em`, fixed seeds) written in the real
on-disk formats the bundle reads (source: Lucchi-style tif stack + binary 0/255 ground truth; target: h5
``raw`` + ``label`` volume with a ``<name>_points.csv`` of (z, y, x) points on 15 % of the instances of each
slice; a held-out labelled target test volume). The target training labels are read only by the ``supervised``
row (the upper bound).

Each row trains the bundle exactly as a user does (``python -m monai.bundle run`` of ``train.json`` with
``--mode`` and the schedule overrides below, in a subprocess), then runs ``inference.json`` + ``evaluate.json`` on
the target test volume per slice (2D) and as a volume (3D assembly). Rows train two at a time, one thread each
(the fastest use of two CPU cores). Targets (issue): WDA AJI >= source-only AJI + 0.15 and >= 0.85 x the
supervised AJI; UDA between source-only and WDA. ``quick=True`` (CI) trains source-only and WDA on a shorter
schedule, evaluates them per slice only (each evaluation is one more bundle process) and asserts that WDA beats
source-only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run", "make_data", "train_and_evaluate", "ROWS", "BASE", "QUICK"]

logger = logging.getLogger(__name__)

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "em_mito_wda"

#: data sizes and bundle overrides of the full benchmark: the bundle's own schedule, without the in-training
#: validation (it selects nothing: the final model is evaluated)
BASE: dict[str, Any] = {
    "source_shape": (16, 256, 256),
    "target_shape": (16, 256, 256),
    "test_shape": (8, 256, 256),
    "point_fraction": 0.15,
    "overrides": {"val_interval": 1000},
    "infer_modes": ("2d", "3d"),
}

#: the reduced CI version
QUICK: dict[str, Any] = {
    "source_shape": (8, 192, 192),
    "target_shape": (8, 192, 192),
    "test_shape": (4, 192, 192),
    "point_fraction": 0.15,
    "overrides": {"warmup_rounds": 2, "stage1_ratios": [0.0, 0.3], "stage2_ratios": [0.35], "epochs_per_round": 1,
                  "samples_per_epoch": 24, "val_interval": 1000, "teacher_tile_size": 192},
    "infer_modes": ("2d",),
}

#: benchmark rows: label -> bundle mode
ROWS: dict[str, str] = {
    "source-only": "source_only",
    "UDA": "uda",
    "WDA 15% points": "wda",
    "target supervised": "supervised",
}


def make_data(root: str | os.PathLike, seed: int = 0, source_shape: tuple[int, ...] = (16, 256, 256),
              target_shape: tuple[int, ...] = (16, 256, 256), test_shape: tuple[int, ...] = (8, 256, 256),
              point_fraction: float = 0.15, target_knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the benchmark's two-domain dataset under ``root`` (``source/`` and ``target/``); returns counts.

    ``target_knobs`` override the generator's target-domain preset (e.g. ``{"scale": 2.0, "gamma": 2.0}`` for a
    wider domain gap); the default is the data generator's own two-domain setting."""
    from monai_ext.data.synthetic import sample_seeds, sparse_points, synth_em
    from monai_ext.data.writers import write_em_volume, write_points

    root = Path(root)
    s_src, s_tgt, s_test, s_pts = sample_seeds(10_000 + int(seed), 4)
    src = synth_em(s_src, "source", tuple(source_shape), point_fraction=0.0)
    knobs = dict(target_knobs or {})
    tgt = synth_em(s_tgt, "target", tuple(target_shape), point_fraction=0.0, **knobs)
    tst = synth_em(s_test, "target", tuple(test_shape), point_fraction=0.0, **knobs)

    def u8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    write_em_volume(root / "source" / "training.tif", u8(src["image"][0]))
    write_em_volume(root / "source" / "training_groundtruth.tif", ((src["label"][0] > 0) * 255).astype(np.uint8))
    write_em_volume(root / "target" / "target_train.h5", u8(tgt["image"][0]), key="raw")
    write_em_volume(root / "target" / "target_train.h5", tgt["label"][0].astype(np.uint16), key="label")
    pts = sparse_points(tgt["label"][0], point_fraction, s_pts, per_slice=True)
    write_points(root / "target" / "target_train_points.csv", pts)
    write_em_volume(root / "target" / "target_test.h5", u8(tst["image"][0]), key="raw")
    write_em_volume(root / "target" / "target_test.h5", tst["label"][0].astype(np.uint16), key="label")
    n_tgt = int(sum(len(np.unique(z[z > 0])) for z in tgt["label"][0]))
    return {"source_instances": int(src["meta"]["n_instances"]), "target_slice_instances": n_tgt,
            "target_points": int(len(pts)), "test_instances": int(tst["meta"]["n_instances"])}


def _arg(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> None:
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"bundle run failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def train_and_evaluate(name: str, mode: str, data_root: Path, work: Path, overrides: dict[str, Any],
                       threads: int = 1, seed: int = 0, infer_modes: tuple[str, ...] = ("2d", "3d")) -> dict[str, Any]:
    """Train one row in a fresh copy of the bundle, evaluate it per slice (``"2d"``) and / or per volume (``"3d"``);
    returns metrics + timings (a mode not evaluated has empty metrics)."""
    from monai_ext.bundle.run import bundle_run_command

    root = work / name.replace(" ", "_").replace("%", "pct")
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "eval_2d", "eval_3d", "__pycache__"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    log = root / "benchmark.log"
    common = ["--dataset_dir", str(data_root)]
    args = common + ["--mode", mode, "--seed", str(seed)]
    for key, value in overrides.items():
        args += [f"--{key}", _arg(value)]
    t0 = time.time()
    _run(bundle_run_command(root, ["train.json"], *args), log, env)
    t_train = time.time() - t0
    out: dict[str, Any] = {"mode": mode, "train_seconds": t_train, "2d": {}, "3d": {}}
    for infer_mode in infer_modes:
        t1 = time.time()
        _run(bundle_run_command(root, ["inference.json", "evaluate.json"], *common, "--infer_mode", infer_mode,
                                "--output_dir", str(root / f"eval_{infer_mode}"), "--save_overlays", "false"), log, env)
        metrics = json.loads((root / f"eval_{infer_mode}" / "metrics.json").read_text())
        out[infer_mode] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if infer_mode == "2d":
            out["slice_aji"] = slice_aji(root / "eval_2d" / "predictions", data_root / "target" / "target_test.h5")
        out[f"eval_{infer_mode}_seconds"] = time.time() - t1
    stats = sorted((root / "models" / "pseudo_labels").glob("round_*/stats.json"))
    out["rounds"] = [json.loads(p.read_text()) for p in stats]
    return out


def slice_aji(pred_dir: Path, test_volume: Path) -> dict[int, float]:
    """AJI of every saved 2D prediction ``<name>_z<k>`` against slice ``k`` of the test volume's ``label``."""
    import re

    from monai_ext.evaluation import find_predictions, read_label_image
    from monai_ext.metrics import aji

    label = read_label_image(test_volume)
    out: dict[int, float] = {}
    for sid, path in find_predictions(pred_dir).items():
        match = re.search(r"_z(\d+)$", sid)
        if match:
            z = int(match.group(1))
            out[z] = float(aji(label[z], np.squeeze(read_label_image(path))))
    return out


def paired_difference(a: dict[int, float], b: dict[int, float], n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of ``a[k] - b[k]`` over the slices both have, with a 95 % bootstrap interval: ``(mean, lo, hi, n)``."""
    keys = sorted(set(a) & set(b))
    d = np.array([a[k] - b[k] for k in keys], np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
    return float(d.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)), int(d.size)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the report dict of ``scripts/benchmark_quality.py``."""
    start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = QUICK if quick else BASE
    data_root = out_dir / "data"
    if data_root.exists():
        shutil.rmtree(data_root)
    counts = make_data(data_root, seed, cfg["source_shape"], cfg["target_shape"], cfg["test_shape"], cfg["point_fraction"])
    rows = {k: v for k, v in ROWS.items() if not quick or v in ("source_only", "wda")}
    with ThreadPoolExecutor(max_workers=2) as pool:  # two bundle processes, one thread each
        futures = {label: pool.submit(train_and_evaluate, label, mode, data_root, out_dir, cfg["overrides"], 1, seed,
                                      tuple(cfg["infer_modes"]))
                   for label, mode in rows.items()}
        results = {label: f.result() for label, f in futures.items()}
    aji = {label: r["2d"].get("aji") for label, r in results.items()}
    src, wda = aji.get("source-only"), aji.get("WDA 15% points")
    sup, uda = aji.get("target supervised"), aji.get("UDA")
    targets: dict[str, bool] = {}
    if src is not None and wda is not None:
        targets["WDA AJI > source-only AJI"] = bool(wda > src)
        if not quick:
            targets["WDA AJI >= source-only AJI + 0.15"] = bool(wda >= src + 0.15)
    if sup is not None and wda is not None:
        targets["WDA AJI >= 0.85 x target-supervised AJI"] = bool(wda >= 0.85 * sup)
    if uda is not None and src is not None and wda is not None:
        targets["source-only AJI <= UDA AJI <= WDA AJI"] = bool(src <= uda <= wda)
    data_desc = (f"synthetic EM, source {cfg['source_shape']} -> target {cfg['target_shape']}, "
                 f"test {cfg['test_shape']}")
    table = [
        "| row | AJI (2D) | Dice (2D) | Jaccard (2D) | PQ (2D) | AP50 (2D) | AJI (3D) | Dice (3D) | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    report_rows = []
    for label, r in results.items():
        m2, m3 = r["2d"], r["3d"]
        table.append(f"| {label} | {_fmt(m2.get('aji'))} | {_fmt(m2.get('fg_dice'))} | {_fmt(m2.get('fg_iou'))} | "
                     f"{_fmt(m2.get('pq'))} | {_fmt(m2.get('ap50'))} | {_fmt(m3.get('aji'))} | {_fmt(m3.get('fg_dice'))} | "
                     f"{r['train_seconds']:.0f} |")
        budget = {"source_only": "no target labels", "uda": "no target labels",
                  "wda": f"{int(cfg['point_fraction'] * 100)}% target points", "supervised": "full target labels"}[r["mode"]]
        report_rows.append({"method": label, "data": data_desc, "budget": budget,
                            "metrics": {"aji": m2.get("aji"), "dice": m2.get("fg_dice"), "jaccard": m2.get("fg_iou"),
                                        "pq": m2.get("pq"), "ap50": m2.get("ap50"), "aji_3d": m3.get("aji"),
                                        "dice_3d": m3.get("fg_dice")},
                            "train_seconds": r["train_seconds"]})
    md = [f"# em_mito_wda quality ({'quick' if quick else 'full'} benchmark, seed {seed})", "",
          f"Data: {data_desc}; {counts}.", "", *table, ""]
    md += [f"- [{'PASS' if ok else 'MISS'}] {t}" for t, ok in targets.items()]
    gaps: dict[str, Any] = {}  # paired per-slice differences: is a gap between rows more than test-set noise?
    for other in ("source-only", "UDA"):
        if other in results and "WDA 15% points" in results:
            mean, lo, hi, n = paired_difference(results["WDA 15% points"].get("slice_aji", {}),
                                                results[other].get("slice_aji", {}))
            if n:
                gaps[other] = {"mean": mean, "ci95": [lo, hi], "slices": n}
                md.append(f"- WDA - {other} AJI per test slice: mean {mean:+.3f}, 95 % bootstrap interval "
                          f"[{lo:+.3f}, {hi:+.3f}] over {n} slices")
    if src is not None and sup is not None:
        md.append(f"- Headroom on this data: target-supervised - source-only = {sup - src:+.3f} AJI"
                  + (f"; the +0.15 target asks WDA for {src + 0.15:.3f}, {src + 0.15 - sup:.3f} above the fully "
                     "supervised upper bound" if src + 0.15 > sup else ""))
    summary = {"ours": wda, "upper_bound": sup, "ratio": (wda / sup) if (wda is not None and sup) else None,
               "paper_ratio": None, "metric": "aji", "budget": f"{int(cfg['point_fraction'] * 100)}% target points",
               "data": data_desc, "source_only": src, "uda": uda}
    return {"method": "em", "rows": report_rows, "summary": summary, "targets": targets, "markdown": "\n".join(md) + "\n",
            "details": results, "data_counts": counts, "wda_gaps": gaps, "seconds": time.time() - start}
