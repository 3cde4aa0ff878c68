"""Folder evaluation (``python -m monai_ext evaluate``) and the overlay verb on sample data in real formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from monai_ext.data import get_reader
from monai_ext.data.sample import ensure_sample_data
from monai_ext.errors import DataError
from monai_ext.evaluation import evaluate_folder


@pytest.fixture(scope="module")
def coin_gt() -> tuple[str, list[dict]]:
    root = ensure_sample_data("coin")
    reader = get_reader(None, root)
    return root, [reader.load(r) for r in reader.datalist("test")]


def _write_preds(folder: Path, samples: list[dict], damage: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s in samples:
        lab = s["label"][0].astype(np.int32)
        if damage:  # merge every instance into one blob: a bad prediction
            lab = (lab > 0).astype(np.int32)
        tifffile.imwrite(folder / f"{s['meta']['id']}.tif", lab)
        ids = np.unique(lab[lab > 0])
        (folder / f"{s['meta']['id']}_scores.json").write_text(json.dumps({str(int(i)): 0.9 for i in ids}))


def test_perfect_predictions_score_one(coin_gt, tmp_path: Path) -> None:
    root, samples = coin_gt
    _write_preds(tmp_path / "pred", samples, damage=False)
    res = evaluate_folder(tmp_path / "pred", root, split="test", output_dir=tmp_path / "out")
    assert res["n_images"] == len(samples)
    for key in ("aji", "pq", "fg_dice", "ranked_map"):
        assert res["summary"][key] == pytest.approx(1.0)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["aji"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "metrics_per_image.csv").read_text().count("\n") == len(samples) + 1


def test_merged_predictions_score_lower_and_cli_prints_table(coin_gt, tmp_path: Path) -> None:
    root, samples = coin_gt
    _write_preds(tmp_path / "pred", samples, damage=True)
    res = evaluate_folder(tmp_path / "pred", root, split="test", mode="pooled")
    assert res["summary"]["aji"] < 0.8 and res["summary"]["fg_dice"] == pytest.approx(1.0)
    out = subprocess.run(
        [sys.executable, "-m", "monai_ext", "evaluate", str(tmp_path / "pred"), root, "--split", "test",
         "--metrics", "aji,pq"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "| id | aji | pq" in out and "per_image mean" in out


def test_missing_predictions_are_named(coin_gt, tmp_path: Path) -> None:
    root, samples = coin_gt
    _write_preds(tmp_path / "pred", samples[:1], damage=False)
    with pytest.raises(DataError, match="no prediction for"):
        evaluate_folder(tmp_path / "pred", root, split="test")
    res = evaluate_folder(tmp_path / "pred", root, split="test", allow_missing=True)
    assert res["summary"]["aji"] < 1.0


def test_overlay_verb_writes_png(coin_gt, tmp_path: Path) -> None:
    root, samples = coin_gt
    s = samples[0]
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, (np.moveaxis(s["image"], 0, -1) * 255).astype(np.uint8))
    lab = tmp_path / "lab.tif"
    tifffile.imwrite(lab, s["label"][0].astype(np.uint16))
    out = tmp_path / "ov.png"
    subprocess.run([sys.executable, "-m", "monai_ext", "overlay", str(img), str(out), "--label", str(lab)], check=True,
                   capture_output=True)
    from PIL import Image

    assert Image.open(out).size[0] >= s["image"].shape[-1]
