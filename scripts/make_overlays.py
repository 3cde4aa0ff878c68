# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Write one overlay PNG per synthetic generator (EM: one per domain) so a person can check the data by eye.

Each PNG shows the raw image next to the image with the ground-truth instances (filled, green contours) and the
points (yellow dots: blob-detected points for fluorescence, sparse points for EM target, none otherwise).

Usage::

    python scripts/make_overlays.py --out overlays [--seed 0] [--size 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def make_overlays(out: str | Path, seed: int = 0, size: int = 256) -> list[Path]:
    """Generate one sample per generator and write ``<out>/<name>.png``; returns the written paths."""
    from monai_ext.data.synthetic import synth_em, synth_fluorescence, synth_he_tile, synth_rosette
    from monai_ext.visualize import overlay_instances, save_panel, to_rgb

    out = Path(out)
    shape = (int(size), int(size))
    samples = {
        "he": synth_he_tile(seed, shape),
        "fluorescence": synth_fluorescence(seed, shape, channels="both"),
        "em_source": synth_em(seed, "source", shape),
        "em_target": synth_em(seed, "target", shape),
        "rosette": synth_rosette(seed, shape),
    }
    written = []
    for name, s in samples.items():
        pts = s.get("points") if name in ("fluorescence", "em_target") else None
        over = overlay_instances(s["image"], s["label"], points=pts, alpha=0.3)
        n = int(s["meta"]["n_instances"])
        extra = f", {len(pts)} points" if pts is not None else ""
        titles = [f"{name} seed={seed}", f"ground truth: {n} instances{extra}"]
        panels = [to_rgb(s["image"]), over]
        if name == "fluorescence":  # the nuclei channel the points were detected on
            panels.insert(1, to_rgb(s["nuclei"]))
            titles.insert(1, "nuclei channel")
        written.append(save_panel(out / f"{name}.png", panels, titles))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed")
    ap.add_argument("--size", type=int, default=256, help="tile size in pixels")
    args = ap.parse_args(argv)
    for p in make_overlays(args.out, args.seed, args.size):
        print(p)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
