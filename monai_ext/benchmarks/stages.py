# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Where each bundle's inference time goes: loading, network (with its inferer), every post-processing transform.

The bundle's own ``inference.json`` is parsed with :class:`monai.bundle.ConfigParser` and its ``preprocessing``,
``inferer``, ``network`` and ``postprocessing`` are run one stage at a time on standard-size images (the sizes of
:data:`monai_ext.benchmarks.speed.STANDARD`, written in the real dataset format), so the figures are those of
``python -m monai.bundle run`` minus the engine. Weights: the bundle's ``models/model.pt`` when it exists (or
``--weights``), else random initialisation (said in the report: post-processing time then depends on what an
untrained network predicts). ``--compare`` adds the speed-up over an earlier run's JSON (before / after a change).

Usage: ``python scripts/benchmark_stages.py [all | coin points em spoco] [--threads 1] [--compare old.json]``;
writes ``reports/stages.json`` and ``reports/stages.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: instance metrics of the timed predictions against the test labels (mean over the timed images)
QUALITY_METRICS = ("aji", "pq", "ap50", "fg_dice")

__all__ = ["profile_bundle", "coin_pseudo_label_stages", "run", "markdown", "summary_markdown", "main"]

REPO = Path(__file__).resolve().parents[2]


def _load_weights(network: torch.nn.Module, path: Path, device: torch.device) -> None:
    obj = torch.load(path, map_location=device, weights_only=False)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    network.load_state_dict(obj)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    """``{stage: [seconds, ...]}`` -> ``{"stages": {stage: {"median_s", "times_s"}}, "total_median_s"}``."""
    stages = {k: {"median_s": float(np.median(v)), "times_s": [round(t, 4) for t in v]} for k, v in times.items()}
    return {"stages": stages, "total_median_s": float(sum(v["median_s"] for v in stages.values()))}


def profile_bundle(name: str, data_dir: Path, weights: Path | None = None, n_images: int = 3,
                   overrides: dict[str, Any] | None = None, profile_top: int = 0,
                   random_init: bool = False, output_dir: Path | None = None) -> dict[str, Any]:
    """Time the stages of ``name``'s inference on the test images of ``data_dir``.

    Args:
        name: bundle folder name under ``bundles/``.
        data_dir: a dataset folder the bundle's reader understands.
        weights: network weights (``None``: ``bundles/<name>/models/model.pt`` if present, else random).
        n_images: images timed (after one warm-up pass of the network on the first image).
        overrides: config entries to override (e.g. ``{"tta": False}``).
        profile_top: also run cProfile over the timed images and keep this many functions by cumulative time.
        random_init: ignore any weights file (tests).
        output_dir: where the bundle's writers put their files (``None``: a temporary folder, removed afterwards).

    Returns:
        ``{"stages": {stage: {"median_s", "times_s"}}, "total_median_s", "weights", "profile"}``.
    """
    from monai.bundle import ConfigParser

    from monai_ext.metrics import instance_metrics

    root = REPO / "bundles" / name
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    out_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix=f"stages_{name}_"))
    parser.update({"dataset_dir": str(data_dir), "output_dir": str(out_dir), "bundle_root": str(root),
                   **(overrides or {})})
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network")
    wpath = Path(weights) if weights else root / "models" / "model.pt"
    used = "random initialisation"
    if wpath.is_file() and not random_init:
        _load_weights(network, wpath, device)
        used = str(wpath.relative_to(REPO)) if wpath.is_relative_to(REPO) else str(wpath)
    network.eval()
    inferer = parser.get_parsed_content("inferer")
    pre = parser.get_parsed_content("preprocessing")
    post = parser.get_parsed_content("postprocessing")
    records = list(parser.get_parsed_content("dataset#data"))[:n_images]
    if not records:
        raise ValueError(f"{data_dir}: no test images for {name}")

    times: dict[str, list[float]] = {}
    shapes: list[list[int]] = []
    quality: list[dict[str, float]] = []

    def timed(stage: str, fn: Any, *args: Any) -> Any:
        _sync(device)
        t0 = time.perf_counter()
        res = fn(*args)
        _sync(device)
        times.setdefault(stage, []).append(time.perf_counter() - t0)
        return res

    def one(record: dict[str, Any]) -> None:
        d = timed("load + preprocessing", pre, record)
        shapes.append(list(np.asarray(d["image"]).shape))
        x = torch.as_tensor(d["image"])[None].to(device)
        with torch.no_grad():
            pred = timed("network (inferer)", inferer, x, network)
        out = {**d, "pred": pred[0]}
        for t in post.transforms:
            out = timed(type(t).__name__, t, out)
        if d.get("label") is not None:  # quality of the timed output, so a speed change shows what it costs
            label = np.asarray(d["label"]).squeeze()
            quality.append(instance_metrics(label, np.asarray(out["pred"]).squeeze().astype(np.int64),
                                            QUALITY_METRICS))

    with torch.no_grad():  # warm-up: first-call allocations and lazy initialisation
        inferer(torch.as_tensor(pre(records[0])["image"])[None].to(device), network)
    prof = cProfile.Profile() if profile_top else None
    if prof is not None:
        prof.enable()
    for rec in records:
        one(rec)
    if prof is not None:
        prof.disable()
    result: dict[str, Any] = {
        "bundle": name, "images": len(records), "weights": used, "overrides": overrides or {},
        **_summarise(times), "shape": shapes[0],
    }
    if quality:
        result["quality"] = {k: float(np.nanmean([q[k] for q in quality])) for k in QUALITY_METRICS}
    if output_dir is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(profile_top)
        result["profile"] = buf.getvalue()
    return result


def coin_pseudo_label_stages(shape: tuple[int, int] = (1000, 1000), repeats: int = 2, seed: int = 0
                             ) -> dict[str, Any]:
    """Median seconds of each COIN Step 0-2 stage (the per-round pseudo-label building of training) on a synthetic
    H&E image of ``shape``, with the offline defaults (filter-bank features fitted on two 512^2 tiles, classical
    refiner)."""
    from monai_ext.benchmarks.quality_coin import pseudo_label_step_times
    from monai_ext.data.synthetic import make_dataset
    from monai_ext.pseudo.features import FilterBankExtractor
    from monai_ext.pseudo.propagation import PixelPropagation
    from monai_ext.pseudo.seeds import StainWatershedSeeds

    fit = make_dataset("he", 2, seed=seed + 77, shape=(512, 512))
    seeder = StainWatershedSeeds()
    prop = PixelPropagation(FilterBankExtractor()).fit((d["image"], seeder(d["image"])) for d in fit)
    image = make_dataset("he", 1, seed=seed + 555, shape=tuple(shape))[0]["image"]
    runs = [pseudo_label_step_times(image, prop)[0] for _ in range(int(repeats))]
    times = {k: [r[k] for r in runs] for k in runs[0] if k != "feature_map_mb"}
    return {"bundle": "coin_histopathology (training: Step 0-2 pseudo-labels)", "images": int(repeats),
            "weights": "none (offline components)", "image_size": f"{shape[0]}x{shape[1]} RGB (synthetic H&E)",
            "shape": [3, *shape], **_summarise(times)}


def run(names: list[str], out: Path, n_images: int = 3, threads: int = 1, profile_top: int = 0,
        compare: Path | None = None, data_root: Path | None = None, coin_steps: bool = True,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Profile ``names`` at their standard sizes; write ``stages.json`` / ``stages.md`` under ``out``.

    With COIN in ``names`` and ``coin_steps``, its training-time Step 0-2 stages are timed too
    (:func:`coin_pseudo_label_stages`). ``overrides``: ``inference.json`` entries set in every bundle (e.g.
    ``{"tta": False}``), to time and score an alternative setting against the default one."""
    from monai_ext.benchmarks.speed import STANDARD
    from monai_ext.data.sample import write_sample_dataset

    torch.set_num_threads(int(threads))
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_root) if data_root else out / "work_stages"
    results: dict[str, Any] = {"device": "cuda" if torch.cuda.is_available() else "cpu",
                               "cpu": platform.processor() or platform.machine(),
                               "torch_threads": torch.get_num_threads(), "bundles": {}}
    for name in names:
        data = data_root / name
        marker = data / "standard.json"
        spec = STANDARD[name]["spec"]
        if not (marker.is_file() and json.loads(marker.read_text()) == spec):
            write_sample_dataset(name, data, spec=spec)
            marker.write_text(json.dumps(spec))
        res = profile_bundle(name, data, n_images=n_images, profile_top=profile_top, overrides=overrides)
        res["image_size"] = STANDARD[name]["size"]
        results["bundles"][name] = res
        if name == "coin_histopathology" and coin_steps:
            results["bundles"]["coin_pseudo_labels"] = coin_pseudo_label_stages()
    if compare is not None and Path(compare).is_file():
        results["baseline"] = json.loads(Path(compare).read_text())
        results["baseline_file"] = str(compare)
    saved = {**results, "bundles": {k: {f: v for f, v in r.items() if f != "profile"}  # profiles: printed only
                                    for k, r in results["bundles"].items()}}
    (out / "stages.json").write_text(json.dumps(saved, indent=2))
    (out / "stages.md").write_text(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    """Per-stage tables (with before / after columns when a baseline is attached)."""
    base = results.get("baseline", {}).get("bundles", {})
    lines = [f"Device: {results['device']} ({results['torch_threads']} torch thread(s)); median seconds per image "
             "over the timed images, after one warm-up pass of the network.", ""]
    for name, r in results["bundles"].items():
        b = base.get(name, {}).get("stages", {})
        lines += [f"#### {name} ({r['image_size']}, input {r['shape']}; weights: {r['weights']})", ""]
        if b:
            lines += ["| stage | before (s) | after (s) | speed-up |", "|---|---|---|---|"]
        else:
            lines += ["| stage | seconds | share |", "|---|---|---|"]
        total = r["total_median_s"]
        for stage, s in r["stages"].items():
            if b:
                old = b.get(stage, {}).get("median_s")
                ratio = f"{old / s['median_s']:.2f}x" if old and s["median_s"] > 0 else "-"
                lines.append(f"| {stage} | {old:.3f} | {s['median_s']:.3f} | {ratio} |" if old is not None
                             else f"| {stage} | - | {s['median_s']:.3f} | new |")
            else:
                lines.append(f"| {stage} | {s['median_s']:.3f} | {s['median_s'] / total:.0%} |")
        if b:
            old_total = base[name]["total_median_s"]
            lines.append(f"| **total** | {old_total:.3f} | {total:.3f} | {old_total / total:.2f}x |")
        else:
            lines.append(f"| **total** | {total:.3f} | 100% |")
        lines.append("")
        if r.get("overrides"):
            lines += [f"Overrides: `{json.dumps(r['overrides'])}`", ""]
        if r.get("quality"):
            old_q = base.get(name, {}).get("quality", {})
            lines.append("Quality of these predictions against the test labels (mean over the timed images): " + ", ".join(
                f"{k} {v:.3f}" + (f" (before {old_q[k]:.3f})" if k in old_q else "") for k, v in r["quality"].items()))
            lines.append("")
    return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
    """One line per bundle: total, slowest stage and its share, and (with a baseline) the speed-ups."""
    base = results.get("baseline", {}).get("bundles", {})
    lines = [f"Seconds per image, {results['device']}, {results['torch_threads']} torch thread(s); per-stage tables in "
             "`reports/stages.md`" + (f" (before = `{results.get('baseline_file')}`)." if base else "."), ""]
    head = "| bundle (image size) | total (s) | slowest stage | its share |"
    lines += [head + (" before: total / slowest (s) | speed-up: total / slowest |" if base else ""),
              "|---|---|---|---|" + ("---|---|" if base else "")]
    for name, r in results["bundles"].items():
        stage, st = max(r["stages"].items(), key=lambda kv: kv[1]["median_s"])
        row = (f"| {name} ({r['image_size']}) | {r['total_median_s']:.3f} | {stage} | "
               f"{st['median_s'] / r['total_median_s']:.0%} |")
        if base:
            b = base.get(name)
            if b and stage in b["stages"]:
                old_t, old_s = b["total_median_s"], b["stages"][stage]["median_s"]
                row += (f" {old_t:.3f} / {old_s:.3f} | {old_t / r['total_median_s']:.2f}x / "
                        f"{old_s / st['median_s']:.2f}x |")
            else:
                row += " - | - |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _parse_override(text: str) -> tuple[str, Any]:
    """``"tta=false"`` -> ``("tta", False)``; a value that is not JSON stays a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    from monai_ext.benchmarks.speed import ALIASES, STANDARD

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*", default=["all"], help="bundle names/aliases or 'all'")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--images", type=int, default=3, help="images timed per bundle")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N slowest functions (cProfile)")
    ap.add_argument("--compare", default=None, help="an earlier stages.json: adds before / after columns")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not update the README's Results")
    ap.add_argument("--no-coin-steps", dest="coin_steps", action="store_false",
                    help="skip COIN's training-time Step 0-2 stages")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override an inference.json entry (VALUE parsed as JSON, else a string); repeatable")
    args = ap.parse_args(argv)
    overrides = dict(_parse_override(o) for o in args.overrides)
    names = list(STANDARD) if args.bundles in (["all"], []) else [ALIASES.get(b, b) for b in args.bundles]
    res = run(names, Path(args.out), n_images=args.images, threads=args.threads, profile_top=args.profile,
              compare=Path(args.compare) if args.compare else None, coin_steps=args.coin_steps,
              overrides=overrides or None)
    print(markdown(res))
    if args.readme and not overrides and Path(args.out).resolve() == (REPO / "reports").resolve():
        from monai_ext.benchmarks.readme import README, update_readme_section

        if update_readme_section("stages", summary_markdown(res)):
            print(f"README results updated ({README})")
    for name, r in res["bundles"].items():
        if "profile" in r:
            print(f"---- cProfile {name}\n{r['profile']}")
    return 0
