"""Every CLI verb given bad input ends with one ``monai_ext <verb>: error: <file>: <problem>`` line and exit status 2,
never a traceback of an internal error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from monai_ext.cli import main
from tests.bundle_utils import copy_bundle


def _fails(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"monai_ext {argv[0]}: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    lab = np.zeros((16, 16), np.uint16)
    lab[2:6, 2:6] = 1
    paths = {"image": tmp_path / "img.png", "label": tmp_path / "lab.tif", "small": tmp_path / "small.tif",
             "corrupt": tmp_path / "corrupt.png", "truncated": tmp_path / "trunc.tif", "float": tmp_path / "f.tif",
             "empty": tmp_path / "empty.png"}
    Image.fromarray(img).save(paths["image"])
    tifffile.imwrite(paths["label"], lab)
    tifffile.imwrite(paths["small"], lab[:8, :8])
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    tifffile.imwrite(tmp_path / "whole.tif", lab)
    paths["truncated"].write_bytes((tmp_path / "whole.tif").read_bytes()[:40])
    tifffile.imwrite(paths["float"], lab.astype(np.float32) + 0.5)
    paths["empty"].write_bytes(b"")
    return paths


def test_overlay_bad_inputs(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "o.png")
    img = str(files["image"])
    err = _fails(capsys, "overlay", str(tmp_path / "missing.png"), out)
    assert "missing.png: image file does not exist" in err
    for bad in ("corrupt", "empty", "truncated"):
        err = _fails(capsys, "overlay", str(files[bad]), out)
        assert f"{files[bad]}: cannot read image" in err
    err = _fails(capsys, "overlay", img, out, "--label", str(tmp_path / "nolab.tif"))
    assert "nolab.tif: label image does not exist" in err
    err = _fails(capsys, "overlay", img, out, "--label", str(files["small"]))
    assert f"{files['image']}: cannot overlay" in err and "(8, 8)" in err
    err = _fails(capsys, "overlay", img, out, "--pred", str(files["float"]))
    assert f"{files['float']}: label image must hold integers" in err
    err = _fails(capsys, "overlay", img, out, "--pred", str(files["truncated"]))
    assert f"{files['truncated']}: cannot read label image" in err
    assert not Path(out).exists()
    main(["overlay", img, out, "--label", str(files["label"])])  # the good input still works
    assert Image.open(out).size == (16, 16)


def test_evaluate_bad_inputs(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preds = tmp_path / "preds"
    preds.mkdir()
    gt = tmp_path / "gt"
    err = _fails(capsys, "evaluate", str(tmp_path / "nopreds"), str(gt))
    assert "nopreds: prediction folder does not exist" in err or "gt: dataset folder does not exist" in err
    err = _fails(capsys, "evaluate", str(preds), str(gt), "--metrics", "aji,foo")
    assert "unknown metric 'foo'" in err
    err = _fails(capsys, "evaluate", str(preds), str(gt), "--mode", "average")
    assert "mode must be 'per_image' or 'pooled'" in err
    err = _fails(capsys, "evaluate", str(preds), str(gt))
    assert f"{gt}: dataset folder does not exist" in err
    gt.mkdir()
    err = _fails(capsys, "evaluate", str(preds), str(gt))
    assert f"{gt}: dataset folder is empty" in err


def test_bundle_verbs_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _fails(capsys, "export", "no_such_bundle")
    assert "unknown bundle 'no_such_bundle'" in err
    root = copy_bundle("spoco_sparse", tmp_path)
    err = _fails(capsys, "export", str(root))
    assert f"{root / 'models' / 'model.pt'}: no trained weights" in err
    err = _fails(capsys, "prepare_data", "no_such_bundle", "--root", str(tmp_path / "cache"))
    assert "unknown bundle 'no_such_bundle'" in err
    err = _fails(capsys, "demo", "--bundle", "no_such_bundle", "--output_dir", str(tmp_path / "demo"))
    assert "unknown bundle 'no_such_bundle'" in err


def test_module_entry_point_prints_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "monai_ext", "overlay", str(tmp_path / "x.png"), str(tmp_path / "o.png")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"monai_ext overlay: error: {tmp_path / 'x.png'}: image file does not exist"


def test_failed_bundle_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = copy_bundle("spoco_sparse", tmp_path)
    (root / "configs" / "train.json").write_text('{"imports": [')  # a truncated config
    err = _fails(capsys, "demo", "--bundle", str(root), "--output_dir", str(tmp_path / "demo"), "--quick")
    assert "-m monai.bundle run" in err and "failed with exit status" in err
