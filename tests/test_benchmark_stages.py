"""The stage benchmark runs a bundle's own inference.json pipeline stage by stage and reports per-stage times."""

from __future__ import annotations

import json
from pathlib import Path

from monai_ext.benchmarks.stages import markdown, profile_bundle
from monai_ext.data.sample import write_sample_dataset


def test_profile_bundle_times_every_stage_of_the_inference_config(tmp_path: Path) -> None:
    data = write_sample_dataset("spoco_sparse", tmp_path / "data", spec={"shape": [64, 64], "train": 1, "val": 0,
                                                                          "test": 2})
    res = profile_bundle("spoco_sparse", data, n_images=2, random_init=True, profile_top=5,
                         overrides={"features": [8, 16, 32], "save_overlays": False}, output_dir=tmp_path / "out")
    stages = res["stages"]
    # loading, the network and each post-processing transform of inference.json, in pipeline order
    assert list(stages) == ["load + preprocessing", "network (inferer)", "SpocoClusterd", "SaveInstancesd"]
    assert all(len(s["times_s"]) == 2 and s["median_s"] > 0 for s in stages.values())
    assert res["weights"] == "random initialisation" and res["shape"] == [3, 64, 64]
    assert "cluster_embeddings" in res["profile"]
    # the timed predictions are scored against the test labels (what a faster setting costs in quality)
    q = res["quality"]
    assert set(q) == {"aji", "pq", "ap50", "fg_dice"} and all(0.0 <= v <= 1.0 for v in q.values())
    # the pipeline really ran: SaveInstancesd wrote one instance label file per image
    assert len(list((tmp_path / "out").rglob("*.tif*")) + list((tmp_path / "out").rglob("*.png"))) >= 2

    results = {"device": "cpu", "torch_threads": 1, "bundles": {"spoco_sparse": {**res, "image_size": "64x64"}}}
    plain = markdown(results)
    assert "| network (inferer) |" in plain and "| **total** |" in plain
    slower = json.loads(json.dumps(results))
    for s in slower["bundles"]["spoco_sparse"]["stages"].values():
        s["median_s"] *= 3.0
    slower["bundles"]["spoco_sparse"]["total_median_s"] *= 3.0
    compared = markdown({**results, "baseline": slower})
    assert "| stage | before (s) | after (s) | speed-up |" in compared and "| **total** |" in compared
    assert compared.count("3.00x") == len(stages) + 1
    assert f"aji {q['aji']:.3f} (before {q['aji']:.3f})" in compared


def test_set_overrides_parse_json_values_else_strings() -> None:
    import pytest

    from monai_ext.benchmarks.stages import _parse_override

    assert _parse_override("tta=false") == ("tta", False)
    assert _parse_override("watershed#edge_threshold=otsu") == ("watershed#edge_threshold", "otsu")
    assert _parse_override("roi_size=[256, 256]") == ("roi_size", [256, 256])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _parse_override("tta")


def test_summary_names_the_slowest_stage_and_the_speed_ups() -> None:
    from monai_ext.benchmarks.stages import summary_markdown

    def result(net: float, post: float) -> dict:
        stages = {"network (inferer)": {"median_s": net}, "Clusterd": {"median_s": post}}
        return {"bundles": {"b": {"image_size": "8x8", "stages": stages, "total_median_s": net + post}}}

    after = {"device": "cpu", "torch_threads": 1, **result(1.0, 2.0), "baseline": result(1.0, 6.0),
             "baseline_file": "old.json"}
    line = [ln for ln in summary_markdown(after).splitlines() if ln.startswith("| b ")][0]
    assert line == "| b (8x8) | 3.000 | Clusterd | 67% | 7.000 / 6.000 | 2.33x / 3.00x |"
    plain = summary_markdown({"device": "cpu", "torch_threads": 1, **result(3.0, 1.0)})
    assert "| b (8x8) | 4.000 | network (inferer) | 75% |" in plain and "speed-up" not in plain
