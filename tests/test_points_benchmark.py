"""Reduced quality benchmark (CI): CKS trained from nuclei-derived points beats an untrained model by a wide margin."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~3 min on 2 idle cores; generous for loaded CI machines
def test_quick_quality_benchmark(tmp_path: Path) -> None:
    from monai_ext.benchmarks.quality_points import run

    result = run(tmp_path, quick=True, seed=0)
    rows = {r["method"]: r["metrics"] for r in result["rows"]}
    assert rows["untrained principal"]["ap50"] == 0.0
    assert all(result["targets"].values()), (result["targets"], result["markdown"])
    assert "| CKS (paper losses; L_B trains the border net only) |" in result["markdown"]
