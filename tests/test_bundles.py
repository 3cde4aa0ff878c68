"""Every bundle: model-zoo layout, offline metadata validation, configs parse, network shapes, and a
tiny train -> inference -> evaluate run through ``python -m monai.bundle run`` on the embedded sample data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from monai_ext.bundle import verify_bundle_layout, verify_metadata_offline
from tests.bundle_utils import BUNDLE_NAMES, BUNDLES_DIR, copy_bundle, run_bundle

EXPECTED = {"coin_histopathology", "point_fluorescence", "em_mito_wda", "spoco_sparse"}
pytestmark = pytest.mark.skipif(not BUNDLE_NAMES, reason="no bundles yet")


def test_all_bundles_present() -> None:
    assert EXPECTED <= set(BUNDLE_NAMES), f"missing bundles: {EXPECTED - set(BUNDLE_NAMES)}"


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_layout_and_metadata(name: str) -> None:
    root = BUNDLES_DIR / name
    assert verify_bundle_layout(root) == []
    meta = verify_metadata_offline(root / "configs" / "metadata.json")
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["channel_def"], "MONAI Label reads labels from the output channel_def"


def _parser(root: Path, *names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / n) for n in names])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    return parser


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_configs_parse(name: str) -> None:
    root = BUNDLES_DIR / name
    for combo in (
        ["train.json"],
        ["inference.json"],
        ["inference.json", "evaluate.json"],
        ["train.json", "multi_gpu_train.json"],
    ):
        parser = _parser(root, *combo)
        parser.parse(reset=True)
        for key in ("bundle_root", "device", "network_def"):
            assert key in parser, f"{combo}: missing {key}"
    train = _parser(root, "train.json")
    for key in ("dataset_dir", "train#trainer", "train#trainer#max_epochs", "train#dataset", "train#handlers",
                "validate#evaluator", "validate#handlers"):
        assert key in train, f"train.json lacks {key}"
    # a plain datalist, or (domain adaptation) one per domain
    assert "train#dataset#data" in train or {"train#dataset#source", "train#dataset#target"} <= set(
        k for k in ("train#dataset#source", "train#dataset#target") if k in train
    ), "train.json's dataset has neither `data` nor `source`/`target`"
    infer = _parser(root, "inference.json")
    for key in ("inferer", "output_dir", "preprocessing", "postprocessing", "evaluator"):
        assert key in infer, f"inference.json lacks {key}"


def _spatial(shape: list) -> list[int]:
    out = []
    for s in shape:
        if isinstance(s, int):
            out.append(s)
        else:
            m = re.fullmatch(r"(\d+)\*n", str(s).replace(" ", ""))
            out.append(int(m.group(1)) * 4 if m else 64)
    return out


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_network_input_output_shapes(name: str) -> None:
    root = BUNDLES_DIR / name
    parser = _parser(root, "inference.json")
    parser["device"] = "$torch.device('cpu')"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    spec_in = meta["network_data_format"]["inputs"]["image"]
    spec_out = meta["network_data_format"]["outputs"]["pred"]
    net = parser.get_parsed_content("network_def").eval()
    x = torch.rand(1, spec_in["num_channels"], *_spatial(spec_in["spatial_shape"]))
    with torch.no_grad():
        y = net(x)
    y = y["pred"] if isinstance(y, dict) else y
    assert isinstance(y, torch.Tensor)
    assert y.shape[0] == 1 and y.shape[1] == spec_out["num_channels"]
    assert list(y.shape[2:]) == list(x.shape[2:]), "pred must have the input's spatial shape"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_train_infer_evaluate_tiny(name: str, tmp_path: Path) -> None:
    root = copy_bundle(name, tmp_path)
    run_bundle(root, ["train.json", "tiny.json"])
    assert (root / "models" / "model.pt").is_file()
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values() if torch.is_floating_point(v))
    run_bundle(root, ["inference.json", "tiny.json"])
    preds = sorted((root / "eval" / "predictions").glob("*.tif"))
    assert preds, "inference wrote no predictions"
    run_bundle(root, ["inference.json", "evaluate.json", "tiny.json"])
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics, "evaluation wrote no metrics"
    assert all(v is None or 0.0 <= v <= 1.0 or k.startswith(("n_", "num_")) for k, v in metrics.items() if isinstance(v, float))
