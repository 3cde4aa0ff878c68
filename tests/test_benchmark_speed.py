"""The speed benchmark runs a real bundle (train one epoch + inference through ``monai.bundle``) and reports timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_ext.benchmarks.speed import benchmark_bundle, markdown

pytestmark = pytest.mark.slow


def test_benchmark_bundle_reports_train_and_inference_timings(tmp_path: Path) -> None:
    spec = {"shape": [64, 64], "train": 12, "val": 1, "test": 3}  # 3 training batches: 2 warm-up + 1 timed
    res = benchmark_bundle("spoco_sparse", tmp_path / "spoco", spec=spec, extra_configs=("tiny.json",))
    train, infer = res["train"], res["inference"]
    assert train["iterations"] >= 1 and train["median_s"] > 0
    assert infer["iterations"] >= 1 and 0 < infer["median_s"] < res["inference_wall_s"]
    assert infer["samples_per_s"] > 0 and infer["peak_rss_mb"] >= infer["baseline_rss_mb"] > 0
    # batch size 1: one RGB image per iteration (the decollated sample's 3 channels are not 3 samples)
    assert infer["samples"] == infer["iterations"]
    assert infer["samples_per_s"] == pytest.approx(infer["iterations"] / (infer["mean_s"] * infer["iterations"]))
    table = markdown({"device": "cpu", "cpu": "x", "cpu_count": 2, "torch_threads": 1, "bundles": {"spoco_sparse": res},
                      "peers": {}})
    assert "| spoco_sparse |" in table
