"""em_mito_wda bundle: other tif / h5 layouts as dataset_dir, tiny train -> resume -> 2D and 3D evaluation through
``python -m monai.bundle run``, and the reduced quality benchmark (WDA beats source-only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_ext.data.synthetic import sparse_points, synth_em
from monai_ext.data.writers import write_em_volume, write_points
from tests.bundle_utils import BUNDLES_DIR, copy_bundle, run_bundle

BUNDLE = BUNDLES_DIR / "em_mito_wda"


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _alt_dataset(root: Path) -> Path:
    """Source as one h5 (raw + instance label), target as tif stacks: training stack + points csv, labelled test."""
    src = synth_em(1, "source", (3, 64, 64), point_fraction=0.0)
    tgt = synth_em(2, "target", (3, 64, 64), point_fraction=0.0)
    tst = synth_em(3, "target", (2, 64, 64), point_fraction=0.0)
    write_em_volume(root / "source" / "vnc_train.h5", _u8(src["image"][0]), key="raw")
    write_em_volume(root / "source" / "vnc_train.h5", src["label"][0].astype(np.uint16), key="label")
    write_em_volume(root / "target" / "train" / "mito_a.tif", _u8(tgt["image"][0]))
    write_points(root / "target" / "train" / "mito_a_points.csv", sparse_points(tgt["label"][0], 0.15, 0, per_slice=True))
    write_em_volume(root / "target" / "test" / "mito_b.tif", _u8(tst["image"][0]))
    write_em_volume(root / "target" / "test" / "mito_b_groundtruth.tif", ((tst["label"][0] > 0) * 255).astype(np.uint8))
    return root


def _parser(*names: str, **overrides: object) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / n) for n in names])
    p["bundle_root"] = str(BUNDLE)
    for k, v in overrides.items():
        p[k] = v
    return p


def test_h5_and_tif_layouts_feed_training_and_inference(tmp_path: Path) -> None:
    root = _alt_dataset(tmp_path / "data")
    p = _parser("train.json", "tiny.json", dataset_dir=str(root), ckpt_dir=str(tmp_path / "models"))
    assert len(p.get_parsed_content("source_all")) == 3
    assert len(p.get_parsed_content("target_train_records")) == 3
    store = p.get_parsed_content("pseudo_store")
    stats = p.get_parsed_content("train#builder")(0)
    store.finish(0, stats)
    assert stats["points"] > 0 and stats["slices"] == 3
    item = p.get_parsed_content("train#dataset")[0]
    assert item["source"]["image"].shape == item["target"]["image"].shape == (1, 64, 64)
    assert set(item["target"]) >= {"seg", "det", "det_weight", "point_mask"}
    assert int(item["source"]["seg"].max()) == 1
    for mode, shape in (("2d", (1, 64, 64)), ("3d", (1, 2, 64, 64))):
        q = _parser("inference.json", dataset_dir=str(root), infer_mode=mode)
        sample = q.get_parsed_content("dataset")[0]
        assert tuple(sample["image"].shape) == shape and "label" in sample


@pytest.mark.slow
def test_tiny_train_resume_and_3d_evaluation(tmp_path: Path) -> None:
    root = copy_bundle("em_mito_wda", tmp_path)
    run_bundle(root, ["train.json", "tiny.json"])
    ckpt = torch.load(root / "models" / "last.pt", weights_only=True)
    assert {"network", "optimizer", "contrastive", "rounds", "trainer"} <= set(ckpt)
    assert ckpt["rounds"]["rounds_done"] == [0, 1, 2]
    assert (root / "models" / "pseudo_labels" / "round_02" / "stats.json").is_file()
    # the same command again resumes from last.pt: no round is rebuilt, no epoch is re-run
    proc = run_bundle(root, ["train.json", "tiny.json"])
    log = proc.stdout + proc.stderr
    assert "resumed from" in log and "building pseudo-labels" not in log
    run_bundle(root, ["inference.json", "evaluate.json", "tiny.json"], "--infer_mode", "3d", "--output_dir",
               str(root / "eval3d"))
    metrics = json.loads((root / "eval3d" / "metrics.json").read_text())
    assert metrics["infer_mode"] == "3d" and set(metrics) >= {"aji", "fg_dice", "fg_iou", "pq", "ap50"}
    pred = sorted((root / "eval3d" / "predictions").glob("*.tif"))
    assert len(pred) == 1  # one volume, instances linked across slices

