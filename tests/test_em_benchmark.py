"""Reduced EM quality benchmark (CI): on held-out synthetic target EM, WDA with 15 % points must beat source-only,
and the report must carry the issue's table (rows, metrics, targets, per-round pseudo-label statistics)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from monai_ext.benchmarks import quality_em


def test_make_data_writes_two_domains_with_sparse_points(tmp_path) -> None:
    counts = quality_em.make_data(tmp_path, seed=3, source_shape=(2, 96, 96), target_shape=(3, 96, 96),
                                  test_shape=(2, 96, 96), point_fraction=0.15)
    for rel in ("source/training.tif", "source/training_groundtruth.tif", "target/target_train.h5",
                "target/target_train_points.csv", "target/target_test.h5"):
        assert (tmp_path / rel).is_file(), rel
    with h5py.File(tmp_path / "target" / "target_train.h5", "r") as f:
        raw, label = f["raw"][()], f["label"][()]
    assert raw.shape == label.shape == (3, 96, 96) and raw.dtype == np.uint8
    pts = np.loadtxt(tmp_path / "target" / "target_train_points.csv", delimiter=",", skiprows=1).reshape(-1, 3)
    assert len(pts) == counts["target_points"] > 0
    # every point lies inside a labelled mitochondrion of its slice, and only a fraction of them are pointed
    z, y, x = np.rint(pts).astype(int).T
    assert np.all(label[z, y, x] > 0)
    assert counts["target_points"] < counts["target_slice_instances"]
    # a fixed seed gives the same data
    again = quality_em.make_data(tmp_path / "again", seed=3, source_shape=(2, 96, 96), target_shape=(3, 96, 96),
                                 test_shape=(2, 96, 96))
    assert again == counts


def test_paired_difference_bootstrap_interval() -> None:
    a = {0: 0.5, 1: 0.6, 2: 0.7, 5: 0.9}
    b = {0: 0.4, 1: 0.6, 2: 0.5, 3: 0.1}  # slice 5 / 3 only on one side: left out
    mean, lo, hi, n = quality_em.paired_difference(a, b)
    assert n == 3 and mean == pytest.approx(0.1)
    assert 0.0 <= lo <= mean <= hi <= 0.2 + 1e-12  # resampled means stay within the per-slice differences
    assert quality_em.paired_difference(a, {})[3] == 0


@pytest.mark.slow
def test_quick_benchmark_wda_beats_source_only(tmp_path) -> None:
    result = quality_em.run(tmp_path, quick=True, seed=0)
    details = result["details"]
    assert set(details) == {"source-only", "WDA 15% points"}
    src, wda = details["source-only"]["2d"]["aji"], details["WDA 15% points"]["2d"]["aji"]
    assert wda > src, f"WDA AJI {wda:.3f} does not beat source-only {src:.3f}"
    assert result["targets"]["WDA AJI > source-only AJI"]
    # table structure: one row per trained mode with the metrics, in [0, 1]
    assert [r["method"] for r in result["rows"]] == ["source-only", "WDA 15% points"]
    for row in result["rows"]:
        for key in ("aji", "dice", "jaccard", "pq", "ap50"):
            assert 0.0 <= row["metrics"][key] <= 1.0, (row["method"], key)
        assert row["train_seconds"] > 0
    assert result["summary"]["ours"] == wda and result["summary"]["source_only"] == src
    md = result["markdown"]
    assert "| row | AJI (2D) | Dice (2D) |" in md and "| source-only |" in md and "| WDA 15% points |" in md
    # WDA ran the whole round schedule, with teacher-built pseudo-labels after the warm-up
    rounds = details["WDA 15% points"]["rounds"]
    stages = [r["stage"] for r in rounds]
    assert stages == ["warmup", "warmup", "stage1", "stage1", "stage2"], stages
    assert rounds[-1]["teacher"] and rounds[-1]["kept_by_points"] > 0 and rounds[-1]["fg_fraction"] > 0
    assert rounds[-1]["ignored_fraction"] < 0.6  # a calibrated background, not foreground-only stage-2 labels
    # the per-slice AJI behind the paired WDA - source-only interval averages to evaluate.json's AJI
    gap = result["wda_gaps"]["source-only"]
    assert gap["slices"] == 4 and gap["ci95"][0] <= gap["mean"] <= gap["ci95"][1]
    assert gap["mean"] == pytest.approx(wda - src, abs=1e-6)
    assert "WDA - source-only AJI per test slice" in md and "Headroom on this data" not in md  # no supervised row
    json.dumps(result, default=float)
