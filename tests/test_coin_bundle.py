"""coin_histopathology bundle specifics: a user's MoNuSeg-format folder as dataset_dir, no ground truth in training,
the seed-folder route from the config, TorchScript export of the inference network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser

from monai_ext.data.synthetic import make_dataset
from monai_ext.data.writers import write_monuseg
from tests.bundle_utils import BUNDLES_DIR

ROOT = BUNDLES_DIR / "coin_histopathology"


def _monuseg_folder(root: Path) -> Path:
    data = make_dataset("he", 3, seed=4242, shape=(96, 112))
    for k, s in enumerate(data):
        split = "train" if k < 2 else "test"
        rgb = np.clip(np.rint(s["image"] * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        write_monuseg(root / split, f"TCGA-ZZ-{k:04d}-01Z-00-DX1", rgb, s["label"][0], layout="flat")
    return root


def _parser(bundle_root: Path, dataset_dir: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "tiny.json")])
    parser.read_meta(str(ROOT / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle_root)
    parser["dataset_dir"] = str(dataset_dir)
    parser["device"] = "$torch.device('cpu')"
    for k, v in overrides.items():
        parser[k] = v
    return parser


def test_monuseg_folder_round0_and_training_batches_without_labels(tmp_path) -> None:
    ds_dir = _monuseg_folder(tmp_path / "MoNuSeg")
    parser = _parser(tmp_path / "bundle", ds_dir)
    parser.parse(reset=True)
    builder = parser.get_parsed_content("pseudo#builder")
    store = parser.get_parsed_content("pseudo#store")
    stats = builder(0)
    store.finish(0, stats)
    assert stats["n_pred"] > 0 and store.rounds_done() == [0]
    ds = parser.get_parsed_content("train#dataset")
    item = ds[0]
    item = item[0] if isinstance(item, list) else item
    assert "label" not in item, "ground truth must never reach COIN's training batches"
    assert {"image", "seg", "edge"} <= set(item)
    assert item["image"].shape[0] == 3 and set(torch.unique(item["seg"]).tolist()) <= {0, 1, 255}
    # the cached part of the pipeline holds no label either
    cached = parser.get_parsed_content("train#cache")[0]
    assert "label" not in cached


def test_seed_folder_route_from_config(tmp_path) -> None:
    ds_dir = _monuseg_folder(tmp_path / "MoNuSeg")
    seeds = tmp_path / "psm_masks"
    seeds.mkdir()
    for k in range(2):
        tifffile.imwrite(seeds / f"TCGA-ZZ-{k:04d}-01Z-00-DX1.tif", np.zeros((96, 112), np.uint16) + (np.arange(112) // 30).astype(np.uint16))
    parser = _parser(tmp_path / "bundle", ds_dir, seed_folder=str(seeds))
    parser.parse(reset=True)
    from monai_ext.pseudo.seeds import FolderSeeds

    assert isinstance(parser.get_parsed_content("pseudo#seeds"), FolderSeeds)
    stats = parser.get_parsed_content("pseudo#builder")(0)
    assert stats["n_pred"] > 0


def test_inference_network_exports_to_torchscript() -> None:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def").eval()
    x = torch.rand(1, 3, 72, 88)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-5)


@pytest.mark.parametrize("name", ["train.json", "inference.json"])
def test_network_defs_agree(name: str) -> None:
    import json

    a = json.loads((ROOT / "configs" / "train.json").read_text())["network_def"]
    b = json.loads((ROOT / "configs" / name).read_text())["network_def"]
    assert a == b, "model.pt written by training must load strictly into inference's network_def"
