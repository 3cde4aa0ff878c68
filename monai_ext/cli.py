# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Command line: ``python -m monai_ext <verb> [--flags]`` (Google ``fire``).

Verbs: ``prepare_data`` (write a bundle's sample dataset), ``evaluate`` (prediction folder vs. ground
truth, table out), ``overlay`` (image + labels -> PNG), ``export`` (TorchScript of a trained bundle),
``benchmark`` (speed / quality), ``demo`` (train, infer and evaluate the COIN bundle on sample data).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
BUNDLE_ALIASES = {
    "coin": "coin_histopathology",
    "points": "point_fluorescence",
    "em": "em_mito_wda",
    "spoco": "spoco_sparse",
}


def _bundle_dir(bundle: str) -> Path:
    """A bundle folder from a path or a bundle name (or alias) of this repository."""
    path = Path(bundle)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    name = BUNDLE_ALIASES.get(bundle, bundle)
    path = REPO_BUNDLES / name
    if not (path / "configs" / "metadata.json").is_file():
        raise SystemExit(f"unknown bundle {bundle!r}: give a bundle folder or one of {sorted(BUNDLE_ALIASES.values())}")
    return path


def run_bundle_config(bundle_root: str | Path, configs: list[str], *args: str) -> None:
    """Run ``python -m monai.bundle run`` on ``configs`` (names under ``<bundle>/configs``) in a subprocess."""
    from monai_ext.bundle.run import bundle_run_command

    cmd = bundle_run_command(bundle_root, configs, *args)
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _read_image(path: str) -> "np.ndarray":
    """Any 2D image file as an array (channel-last as stored)."""
    import numpy as np

    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


class CLI:
    """weaklabel-bundles command line."""

    def prepare_data(self, bundle: str, root: str | None = None, force: bool = False) -> str:
        """Write the embedded sample dataset of ``bundle`` (coin/points/em/spoco) and print its folder."""
        from monai_ext.data.sample import ensure_sample_data

        return ensure_sample_data(BUNDLE_ALIASES.get(bundle, bundle), root=root, force=force)

    def evaluate(
        self,
        pred_dir: str,
        gt_dir: str,
        gt_format: str | None = None,
        split: str | None = None,
        metrics: str | None = None,
        mode: str = "per_image",
        output_dir: str | None = None,
        allow_missing: bool = False,
    ) -> None:
        """Score a folder of predicted instance label images against a dataset folder; prints a table.

        ``metrics`` is a comma-separated list (e.g. ``aji,pq,ap50``); ``mode`` is ``per_image`` or ``pooled``."""
        from monai_ext.evaluation import evaluate_folder

        names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else metrics
        result = evaluate_folder(pred_dir, gt_dir, gt_format, split, names, mode, output_dir, allow_missing)
        print(result["markdown"])

    def overlay(self, image: str, output: str, label: str | None = None, pred: str | None = None) -> str:
        """Write a PNG of ``image`` with ground-truth (``label``) and predicted (``pred``) instance contours."""
        from monai_ext.evaluation import read_label_image
        from monai_ext.visualize import save_overlay

        img = _read_image(image)
        lab = read_label_image(label) if label else None
        prd = read_label_image(pred) if pred else None
        save_overlay(output, img, label=lab, pred=prd)
        return output

    def benchmark(self, kind: str = "speed", *names: str, out: str = "reports", quick: bool = False) -> None:
        """``benchmark speed [bundles...]`` or ``benchmark quality {coin,points,em,spoco,all}`` (see scripts/)."""
        if kind == "speed":
            from monai_ext.benchmarks.speed import main as speed_main

            speed_main([*names, "--out", out])
        elif kind == "quality":
            import runpy

            script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_quality.py"
            sys.argv = [str(script), *(names or ("all",)), "--out", out, *(["--quick"] if quick else [])]
            runpy.run_path(str(script), run_name="__main__")
        else:
            raise SystemExit(f"unknown benchmark {kind!r}: use 'speed' or 'quality'")

    def demo(self, output_dir: str = "demo_output", bundle: str = "coin", quick: bool = False) -> str:
        """Train, infer and evaluate a bundle on its sample data; predictions, metrics and overlays land in
        ``output_dir``. ``quick`` merges the bundle's ``configs/tiny.json``."""
        import shutil

        src = _bundle_dir(bundle)
        out = Path(output_dir).resolve()
        work = out / src.name
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
        extra = ["tiny.json"] if quick else []
        run_bundle_config(work, ["train.json", *extra])
        run_bundle_config(work, ["inference.json", *extra])
        run_bundle_config(work, ["inference.json", "evaluate.json", *extra])
        metrics = work / "eval" / "metrics.json"
        print(f"\npredictions: {work / 'eval' / 'predictions'}\noverlays:    {work / 'eval' / 'overlays'}\n"
              f"metrics:     {metrics}")
        if metrics.exists():
            print(metrics.read_text())
        return str(work)

    def export(self, bundle: str, output: str | None = None) -> str:
        """TorchScript-export a trained bundle's network (``models/model.pt`` -> ``models/model.ts``)."""
        root = _bundle_dir(bundle)
        ts = output or str(root / "models" / "model.ts")
        cmd = [
            sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", ts,
            "--ckpt_file", str(root / "models" / "model.pt"),
            "--meta_file", str(root / "configs" / "metadata.json"),
            "--config_file", str(root / "configs" / "inference.json"),
            "--bundle_root", str(root),
        ]
        subprocess.run(cmd, check=True)
        return ts


def main() -> None:
    import fire

    fire.Fire(CLI, name="monai_ext")


if __name__ == "__main__":
    main()
