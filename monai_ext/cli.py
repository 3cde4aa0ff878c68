# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Command line: ``python -m monai_ext <verb> [--flags]`` (Google ``fire``).

Verbs: ``prepare_data`` (write a bundle's sample dataset), ``evaluate`` (prediction folder vs. ground
truth, table out), ``overlay`` (image + labels -> PNG), ``export`` (TorchScript of a trained bundle),
``benchmark`` (speed / quality), ``demo`` (train, infer and evaluate the COIN bundle on sample data).

Bad input (a missing or unreadable file, an unknown bundle or metric, a bundle without trained weights) ends with
one line ``monai_ext <verb>: error: <file>: <problem>`` on stderr and exit status 2, not a traceback; internal
errors keep their traceback.
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
        from monai_ext.errors import DataError

        raise DataError(f"unknown bundle {bundle!r}: give a bundle folder or one of {sorted(BUNDLE_ALIASES.values())}")
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

    from monai_ext.errors import DataError

    if not Path(path).is_file():
        raise DataError("image file does not exist", path)
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as exc:  # any decoder failure on a user file is bad input, not a bug of ours
        raise DataError(f"cannot read image ({type(exc).__name__}: {exc})", path) from exc


class CLI:
    """weaklabel-bundles command line."""

    def prepare_data(self, bundle: str, root: str | None = None, force: bool = False) -> str:
        """Write the embedded sample dataset of ``bundle`` (coin/points/em/spoco) and print its folder."""
        from monai_ext.data.sample import canonical_bundle, ensure_sample_data
        from monai_ext.errors import DataError

        try:
            name = canonical_bundle(BUNDLE_ALIASES.get(bundle, bundle))
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        return ensure_sample_data(name, root=root, force=force)

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
        import numpy as np

        from monai_ext.errors import DataError
        from monai_ext.evaluation import evaluate_folder
        from monai_ext.metrics import instance_metrics

        names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else metrics
        if mode not in ("per_image", "pooled"):
            raise DataError(f"mode must be 'per_image' or 'pooled', got {mode!r}")
        try:  # unknown metric names fail here, before any file is read
            instance_metrics(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.int32), names)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        result = evaluate_folder(pred_dir, gt_dir, gt_format, split, names, mode, output_dir, allow_missing)
        print(result["markdown"])

    def overlay(self, image: str, output: str, label: str | None = None, pred: str | None = None) -> str:
        """Write a PNG of ``image`` with ground-truth (``label``) and predicted (``pred``) instance contours."""
        from monai_ext.errors import DataError
        from monai_ext.evaluation import read_label_image
        from monai_ext.visualize import save_overlay

        img = _read_image(image)
        for name in (label, pred):
            if name and not Path(name).is_file():
                raise DataError("label image does not exist", name)
        lab = read_label_image(label) if label else None
        prd = read_label_image(pred) if pred else None
        try:
            save_overlay(output, img, label=lab, pred=prd)
        except ValueError as exc:  # shape mismatch between image and labels, or an image of unusable shape
            raise DataError(f"cannot overlay {label or pred or 'nothing'} on this image: {exc}", image) from exc
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
        from monai_ext.errors import DataError

        root = _bundle_dir(bundle)
        weights = root / "models" / "model.pt"
        if not weights.is_file():
            raise DataError("no trained weights: train the bundle first (python -m monai.bundle run --config_file "
                            "configs/train.json) or copy a model.pt there", weights)
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


def main(argv: list[str] | None = None) -> None:
    """Run a verb; our documented errors (bad input, training faults, disk trouble, a failed bundle run) become
    one ``monai_ext <verb>: error: ...`` line on stderr and exit status 2."""
    import fire

    from monai_ext.errors import DataError, TrainingError

    args = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in args if not a.startswith("-")), "")
    try:
        fire.Fire(CLI, command=args, name="monai_ext")
    except (DataError, TrainingError, OSError) as exc:
        print(f"monai_ext {verb}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except subprocess.CalledProcessError as exc:
        cmd = " ".join(map(str, exc.cmd[:6])) if isinstance(exc.cmd, (list, tuple)) else str(exc.cmd)
        print(f"monai_ext {verb}: error: {cmd} ... failed with exit status {exc.returncode}; see its messages above",
              file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
