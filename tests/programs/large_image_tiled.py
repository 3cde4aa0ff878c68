"""Tiled segmentation of a large image from disk; prints peak RSS (MB) and the instance count.

Usage: python large_image_tiled.py <input.tif> <output.tif> <tile> <margin>
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_ext.inference import tiled_instance_segmentation


def predict(win: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
    labels, n = ndimage.label(win > 127)
    return labels, {i: 1.0 for i in range(1, n + 1)}


def _hwm_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not available")


def main() -> None:
    src, dst, tile, margin = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: imports (torch) are not what we measure
    before = _hwm_mb()
    res = tiled_instance_segmentation(src, predict, tile=tile, margin=margin, output=dst, channel_axis=None)
    peak = _hwm_mb()
    print(f"baseline_mb={before:.1f} peak_mb={peak:.1f} instances={res.num_instances} scores={len(res.scores)}")


if __name__ == "__main__":
    main()
