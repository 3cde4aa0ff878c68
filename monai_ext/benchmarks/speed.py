# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Speed benchmark of every bundle against the peers a user would pick instead.

For each bundle, on images of the dataset's standard size written in its real format: training step time
(``python -m monai.bundle run`` of train.json for one epoch, per-iteration times from
:class:`~monai_ext.handlers.ThroughputTimer`), inference images/s of the whole inference.json pipeline
(loading, network, post-processing, writing) and its peak memory; several iterations, median and
quartiles. In the same run and on the same images: Cellpose (network + flow post-processing) against the
fluorescence bundle and MONAI's HoVerNet against the H&E bundle. Output: ``speed.json`` and ``speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_ext.benchmarks.readme import README, update_readme_section
from monai_ext.bundle.run import bundle_run_command

__all__ = ["STANDARD", "benchmark_bundle", "run", "main"]

REPO = Path(__file__).resolve().parents[2]

#: standard image size of each bundle's data and the sample-data spec that writes it
STANDARD: dict[str, dict[str, Any]] = {
    "coin_histopathology": {"size": "1000x1000 RGB (MoNuSeg)", "spec": {"shape": [1000, 1000], "train": 2, "test": 6}},
    "point_fluorescence": {"size": "520x704 (LIVECell)", "spec": {"shape": [520, 704], "train": 3, "val": 0, "test": 6}},
    "em_mito_wda": {
        "size": "512x512 slices",
        "spec": {"source_shape": [3, 512, 512], "target_shape": [3, 512, 512], "test_shape": [6, 512, 512]},
    },
    "spoco_sparse": {"size": "512x512 RGB (CVPPP-like)", "spec": {"shape": [512, 512], "train": 3, "val": 1, "test": 6}},
}
ALIASES = {"coin": "coin_histopathology", "points": "point_fluorescence", "em": "em_mito_wda", "spoco": "spoco_sparse"}


def _run(root: Path, configs: list[str], *args: str, log: Path) -> float:
    import subprocess

    cmd = bundle_run_command(root, configs, *args)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=root, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return time.perf_counter() - t0


def benchmark_bundle(name: str, work: Path, spec: dict[str, Any] | None = None,
                     extra_configs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train one epoch and run inference of ``name`` on standard-size data; returns the timings.

    ``spec`` (sample-data spec) and ``extra_configs`` (e.g. ``("tiny.json",)``) shrink the run, for tests.
    """
    from monai_ext.data.sample import write_sample_dataset

    std = STANDARD[name]
    work = Path(work).resolve()  # the bundle runs with its own folder as cwd: relative paths would break
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    write_sample_dataset(name, data, spec=spec or std["spec"])
    root = work / name
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(REPO / "bundles" / name, root, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    # one timer file per config: a "+train#..." key cannot be merged into inference.json (no "train" there)
    (root / "configs" / "speed_timer_train.json").write_text(json.dumps({
        "+train#handlers": [{"_target_": "monai_ext.handlers.ThroughputTimer",
                             "output_path": str(work / "train_timing.json"), "skip_first": 2}]}))
    (root / "configs" / "speed_timer_infer.json").write_text(json.dumps({
        "+handlers": [{"_target_": "monai_ext.handlers.ThroughputTimer",
                       "output_path": str(work / "infer_timing.json"), "skip_first": 1}]}))
    args = ["--dataset_dir", str(data)]
    train_wall = _run(root, ["train.json", *extra_configs, "speed_timer_train.json"], *args, "--train#trainer#max_epochs", "1",
                      log=work / "train.log")
    infer_wall = _run(root, ["inference.json", *extra_configs, "speed_timer_infer.json"], *args, log=work / "infer.log")
    result = {
        "bundle": name,
        "image_size": std["size"],
        "train": json.loads((work / "train_timing.json").read_text()),
        "train_wall_s": train_wall,
        "inference": json.loads((work / "infer_timing.json").read_text()),
        "inference_wall_s": infer_wall,
        "data": str(data),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def _peer_images(name: str, data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from monai_ext.data import get_reader

    reader = get_reader(None, data)
    samples = [reader.load(r) for r in reader.datalist("test")]
    return [s["image"] for s in samples], [s["label"][0] for s in samples]


def run(names: list[str], out: Path, peers: bool = True, resume: bool = False) -> dict[str, Any]:
    """Benchmark ``names`` and the peers; write ``speed.json`` / ``speed.md`` under ``out``.

    ``resume`` reuses the bundles already measured under ``out`` (their ``result.json``) and measures the rest.
    """
    from monai_ext.benchmarks import peers as peer_mod
    from monai_ext.data.sample import cache_root

    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bundles": {},
        "peers": {},
    }
    for name in names:
        done = out / "work_speed" / name / "result.json"
        if resume and done.is_file():  # an interrupted benchmark continues where it stopped
            results["bundles"][name] = json.loads(done.read_text())
            continue
        results["bundles"][name] = benchmark_bundle(name, out / "work_speed" / name)
    if peers and "point_fluorescence" in results["bundles"]:
        imgs, labs = _peer_images("point_fluorescence", Path(results["bundles"]["point_fluorescence"]["data"]))
        if peer_mod.ensure_cellpose(cache_root() / "bench-site"):
            results["peers"]["cellpose"] = {"against": "point_fluorescence", **peer_mod.time_cellpose(
                [i[0] for i in imgs], labs, device)}
        else:
            results["peers"]["cellpose"] = {"against": "point_fluorescence", "error": "cellpose could not be installed"}
    if peers and "coin_histopathology" in results["bundles"]:
        imgs, labs = _peer_images("coin_histopathology", Path(results["bundles"]["coin_histopathology"]["data"]))
        results["peers"]["hovernet"] = {"against": "coin_histopathology", **peer_mod.time_hovernet(imgs, labs, device)}
    for r in results["bundles"].values():  # the report names its data relative to where it was run
        if Path(r["data"]).is_absolute() and Path(r["data"]).is_relative_to(Path.cwd()):
            r["data"] = str(Path(r["data"]).relative_to(Path.cwd()))
    (out / "speed.json").write_text(json.dumps(results, indent=2, default=float))
    md = markdown(results)
    (out / "speed.md").write_text(md)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The speed tables of ``results``."""
    dev = results["device"]
    lines = [
        f"Device: {dev} ({results['cpu_count']} CPU cores, {results['torch_threads']} torch threads). "
        "Median [p25-p75] over iterations after warm-up.\n",
        "| bundle | image size | train step (s) | inference (s/image) | images/s | peak RSS during inference (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["bundles"].items():
        t, i = r["train"], r["inference"]
        lines.append(
            f"| {name} | {r['image_size']} | {t['median_s']:.3f} [{t['p25_s']:.3f}-{t['p75_s']:.3f}] | "
            f"{i['median_s']:.3f} [{i['p25_s']:.3f}-{i['p75_s']:.3f}] | {i['samples_per_s']:.2f} | "
            f"{i['peak_rss_mb']:.0f} (+{i['peak_rss_mb'] - i['baseline_rss_mb']:.0f} over start) |"
        )
    if results["peers"]:
        lines += ["", "| peer | against | peer s/image | ours s/image | speed-up (peer / ours) |", "|---|---|---|---|---|"]
        for peer, p in results["peers"].items():
            if "error" in p:
                lines.append(f"| {peer} | {p['against']} | {p['error']} | | |")
                continue
            ours = results["bundles"][p["against"]]["inference"]["median_s"]
            lines.append(
                f"| {p['version']} | {p['against']} | {p['median_s']:.3f} (network {p['network_median_s']:.3f}, "
                f"post-processing {p['postprocess_median_s']:.3f}) | {ours:.3f} | {p['median_s'] / ours:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*", default=["all"], help="bundle names/aliases or 'all'")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--resume", action="store_true", help="reuse the bundles already measured under --out")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not update the README's Results")
    args = ap.parse_args(argv)
    names = list(STANDARD) if args.bundles in (["all"], []) else [ALIASES.get(b, b) for b in args.bundles]
    res = run(names, Path(args.out), peers=not args.no_peers, resume=args.resume)
    table = markdown(res)
    print(table)
    if args.readme and update_readme_section("speed", table):
        print(f"README results updated ({README})")
    return 0
