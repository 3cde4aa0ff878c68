"""Reduced quality benchmark (CI): CKS trained from nuclei-derived points beats an untrained model by a wide margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_matched_area_ratio() -> None:
    from monai_ext.benchmarks.quality_points import matched_area_ratio

    gt = np.zeros((40, 40), np.int32)
    gt[2:12, 2:12] = 1  # 100 px
    gt[20:30, 20:30] = 2  # 100 px
    gt[32:36, 2:6] = 3  # missed
    pred = np.zeros_like(gt)
    pred[3:11, 3:11] = 5  # 64 px inside cell 1: IoU 0.64
    pred[20:32, 20:30] = 7  # 120 px over cell 2: IoU 0.83
    pred[2:4, 20:22] = 9  # false positive
    ratio = matched_area_ratio(gt, pred)
    assert np.allclose(ratio, [0.64, 1.2])
    assert matched_area_ratio(gt, pred, min_iou=0.7).tolist() == [1.2]
    assert matched_area_ratio(gt, np.zeros_like(gt)).size == 0
    with pytest.raises(ValueError, match="unique"):
        matched_area_ratio(gt, pred, min_iou=0.3)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~3 min on 2 idle cores; generous for loaded CI machines
def test_quick_quality_benchmark(tmp_path: Path) -> None:
    from monai_ext.benchmarks.quality_points import run

    result = run(tmp_path, quick=True, seed=0)
    rows = {r["method"]: r["metrics"] for r in result["rows"]}
    assert rows["untrained principal"]["ap50"] == 0.0
    assert all(result["targets"].values()), (result["targets"], result["markdown"])
    assert "| CKS (paper losses; L_B trains the border net only) |" in result["markdown"]
