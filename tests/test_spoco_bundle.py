"""spoco_sparse bundle: CVPPP folders (release layout, h5) as dataset_dir, sparse labels in the training pipeline,
the discriminative baseline from the command line, consistency clustering at inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_ext.data.synthetic import make_dataset
from monai_ext.data.writers import write_cvppp, write_cvppp_h5
from tests.bundle_utils import BUNDLES_DIR, copy_bundle, run_bundle

BUNDLE = BUNDLES_DIR / "spoco_sparse"


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _release_layout(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
    """The CVPPP 2017 release layout: ``CVPPP2017_LSC_training/training/A1`` (no val split) and a test folder."""
    data = make_dataset("rosette", n_train + n_test, seed=5, shape=(96, 96))
    for k, s in enumerate(data):
        split = "training" if k < n_train else "testing"
        write_cvppp(root / "CVPPP2017_LSC_training" / split / "A1", f"plant{k:03d}",
                    _u8(s["image"]).transpose(1, 2, 0), s["label"][0])
    return root


def _parser(root: Path, dataset_dir: Path, *names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / n) for n in names])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    parser["dataset_dir"] = str(dataset_dir)
    parser["device"] = "$torch.device('cpu')"
    return parser


def test_training_pipeline_keeps_the_seeded_ratio(tmp_path: Path) -> None:
    data_dir = _release_layout(tmp_path / "cvppp")
    parser = _parser(BUNDLE, data_dir, "train.json", "tiny.json")
    parser["instance_ratio"] = 0.4
    records, val = parser.get_parsed_content("splits")
    assert len(records) + len(val) == 6 and len(val) >= 1  # no val folder: a seeded split of training
    transform = parser.get_parsed_content("train#preprocessing")
    reader = parser.get_parsed_content("reader")
    for rec in records:
        full = reader.load(rec)["label"]
        n = len(np.unique(full[full > 0]))
        out = transform(dict(rec))
        assert set(out) >= {"image", "image2", "label"} and "fg" not in out
        # the crop may cut instances out, never add: at most round(0.4 n) distinct ids survive
        kept = np.unique(out["label"].numpy())
        assert len(kept[kept > 0]) <= int(round(0.4 * n))
        assert out["image"].shape == out["image2"].shape == (3, 64, 64)


def test_h5_cvppp_is_read_with_foreground(tmp_path: Path) -> None:
    data = make_dataset("rosette", 3, seed=6, shape=(64, 64))
    items = [{"name": f"plant{k:03d}", "rgb": _u8(s["image"]).transpose(1, 2, 0), "label": s["label"][0]}
             for k, s in enumerate(data)]
    write_cvppp_h5(tmp_path / "h5", items, split="training")
    parser = _parser(BUNDLE, tmp_path / "h5", "inference.json")
    reader = parser.get_parsed_content("reader")
    recs = reader.datalist("train")
    assert len(recs) == 3
    sample = parser.get_parsed_content("preprocessing")(dict(recs[0]))
    assert sample["fg"].shape == (1, 64, 64) and int(sample["fg"].sum()) > 0


@pytest.mark.slow
def test_release_layout_train_infer_evaluate_and_consistency(tmp_path: Path) -> None:
    data_dir = _release_layout(tmp_path / "cvppp")
    root = copy_bundle("spoco_sparse", tmp_path)
    extra = ["--dataset_dir", str(data_dir)]
    run_bundle(root, ["train.json", "tiny.json"], *extra)
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "teacher.pt").is_file()
    run_bundle(root, ["inference.json", "tiny.json"], *extra, "--cluster_method", "consistency",
               "--consistency_base", "hdbscan")
    preds = sorted((root / "eval" / "predictions").glob("*.tif"))
    assert len(preds) == 2 and all(p.name.startswith("test_A1_") for p in preds)
    run_bundle(root, ["inference.json", "evaluate.json", "tiny.json"], *extra)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert {"sbd", "ap50", "are"} <= set(metrics) and 0.0 <= metrics["sbd"] <= 1.0
    # the discriminative-loss baseline from the command line (no teacher pass needed)
    root2 = copy_bundle("spoco_sparse", tmp_path / "baseline")
    run_bundle(root2, ["train.json", "tiny.json"], *extra, "--unlabeled_push_weight", "0", "--instance_weight", "0",
               "--consistency_weight", "0", "--max_epochs", "1")
    state = torch.load(root2 / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if torch.is_floating_point(v))
