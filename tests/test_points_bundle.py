"""point_fluorescence bundle beyond the generic harness: LIVECell-COCO dataset_dir with per-cell-line priors,
supervised mode, resume from last.pt, per-class evaluation, TorchScript export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundle_utils import BUNDLES_DIR, copy_bundle, run_bundle

ROOT = BUNDLES_DIR / "point_fluorescence"


def test_configs_resolve_for_both_modes() -> None:
    for mode in ("cks", "supervised"):
        parser = ConfigParser()
        parser.read_config([str(ROOT / "configs" / "train.json")])
        parser["bundle_root"] = str(ROOT)
        parser["mode"] = mode
        parser["dataset_dir"] = "$None"  # no data needed to build the models and losses
        for key in ("network_def", "collaborator_def", "cks_loss", "detection_loss"):
            assert parser.get_parsed_content(key) is not None
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 2


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_livecell_supervised_resume_evaluate_export(tmp_path: Path) -> None:
    from monai_ext.data.sample import ensure_sample_data

    data = ensure_sample_data("point_fluorescence", variant="livecell")
    root = copy_bundle("point_fluorescence", tmp_path)
    common = ["--dataset_dir", data, "--size_prior_per_class", "{'A172': 20.0, 'BT474': 15.0, 'SkBr3': 10.0}"]
    run_bundle(root, ["train.json", "tiny.json"], *common, "--mode", "supervised", "--max_epochs", "1")
    ckpt = torch.load(root / "models" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and "collaborator" in ckpt
    proc = run_bundle(root, ["train.json", "tiny.json"], *common, "--mode", "supervised", "--max_epochs", "2")
    assert "resumed from" in proc.stdout + proc.stderr
    assert torch.load(root / "models" / "last.pt", weights_only=True)["epoch"] == 2
    run_bundle(root, ["inference.json", "evaluate.json", "tiny.json"], "--dataset_dir", data)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert {"ap50", "ap75", "map", "dice", "dsb_ap50"} <= set(metrics)
    assert any(k.startswith("ap50/") for k in metrics), "per-cell-line metrics missing"
    out = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(root / "models" / "model.ts"),
         "--ckpt_file", str(root / "models" / "model.pt"), "--meta_file", str(root / "configs" / "metadata.json"),
         "--config_file", str(root / "configs" / "inference.json"), "--bundle_root", str(root)],
        capture_output=True, text=True, cwd=root, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ts = torch.jit.load(str(root / "models" / "model.ts"))
    y = ts(torch.randn(1, 1, 70, 90))
    assert y.shape == (1, 2, 70, 90)
