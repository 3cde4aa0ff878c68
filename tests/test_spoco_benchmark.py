"""Reduced SPOCO quality benchmark (CI): SPOCO beats the discriminative-loss-only baseline at 10 % labels."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_spoco_beats_discriminative_baseline_at_10_percent(tmp_path: Path) -> None:
    from monai_ext.benchmarks.quality_spoco import run

    result = run(tmp_path, quick=True, seed=0)
    rows = {r["method"]: r["metrics"]["sbd"] for r in result["rows"]}
    assert result["targets"]["SPOCO beats the discriminative-loss baseline at 10 % (SBD)"], rows
    assert rows["SPOCO @ 10%"] > rows["discriminative loss only @ 10%"] + 0.05, rows
    assert "| SPOCO @ 10% |" in result["markdown"]
    assert (tmp_path / "spoco_0.1.pt").is_file()
