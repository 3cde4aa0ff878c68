# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""A throwaway 2D instance-segmentation bundle (model-zoo layout) for tests of the bundle tooling.

The bundle follows the repo's conventions (first input ``image``, first output ``pred``, instance labels
out of ``postprocessing``, ``SaveInstancesd`` at the end, plain state_dict in ``models/model.pt``) but
is tiny and self-contained, so MONAI Label deployment and MLflow tracking can be tested without the
real bundles:

- ``network="threshold"``: a 1x1 convolution whose weights make ``argmax`` equal ``image > 0.5``, so
  the predicted instances of a known image are known exactly (connected components of the bright pixels).
- ``network="unet"``: a small MONAI UNet (random weights), for training runs (``configs/train.json``
  trains it on MONAI's synthetic discs and runs two real ``PseudoLabelRounds`` with a toy builder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["make_toy_bundle", "write_dot_image", "dot_mask"]

_THRESHOLD_NET = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}
_UNET = {
    "_target_": "UNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}
# argmax of the network output -> foreground; 4-connected components -> instance ids 1..N (int32).
_TO_INSTANCES = (
    "$lambda x: torch.as_tensor(sk_label(x.detach().cpu().numpy()[0] > 0, connectivity=1)"
    "[None].astype('int32'))"
)


def _metadata(name: str) -> dict[str, Any]:
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "toy bundle for tests"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.14.1",
        "numpy_version": "2.4.6",
        "required_packages_version": {"scikit-image": "0.26.0"},
        "name": name,
        "task": "Toy 2D cell instance segmentation",
        "description": "Throwaway bundle used by the tests of the bundle tooling.",
        "authors": "weaklabel-bundles contributors",
        "copyright": "Copyright (c) weaklabel-bundles contributors",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "light microscopy",
                    "num_channels": 1,
                    "spatial_shape": ["*", "*"],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "intensity"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "labels",
                    "num_channels": 1,
                    "spatial_shape": ["*", "*"],
                    "dtype": "int32",
                    "value_range": [0, 2147483647],
                    "is_patch_data": False,
                    "channel_def": {"0": "background", "1": "cell"},
                }
            },
        },
    }


def _common(network: dict[str, Any]) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os", "$import monai_ext", "$from skimage.measure import label as sk_label", "$import monai_ext.transforms"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "ckpt_dir": "$@bundle_root + '/models'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "network_def": network,
        "network": "$@network_def.to(@device)",
    }


def _inference(network: dict[str, Any]) -> dict[str, Any]:
    cfg = _common(network)
    cfg.update(
        {
            "datalist": "$[{'image': f, 'meta': {'id': os.path.basename(f)[:-4]}} "
            "for f in sorted(glob.glob(@dataset_dir + '/*.png'))]",
            "preprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "LoadImaged", "keys": "image"},
                    {"_target_": "EnsureChannelFirstd", "keys": "image"},
                    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 255,
                     "b_min": 0.0, "b_max": 1.0, "clip": True},
                    {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
                ],
            },
            "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                    {"_target_": "Lambdad", "keys": "pred", "func": _TO_INSTANCES},
                    {"_target_": "monai_ext.transforms.SaveInstancesd", "keys": "pred", "output_dir": "@output_dir",
                     "overlay": False},
                ],
            },
            "handlers": [
                {"_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'",
                 "load_dict": {"model": "@network"}, "map_location": "@device", "strict": True},
            ],
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@dataloader",
                "network": "@network",
                "inferer": "@inferer",
                "postprocessing": "@postprocessing",
                "val_handlers": "@handlers",
                "amp": False,
            },
            "run": ["$@evaluator.run()"],
        }
    )
    return cfg


def _train(network: dict[str, Any]) -> dict[str, Any]:
    cfg = _common(network)
    cfg["imports"] = cfg["imports"] + ["$import monai_ext.tracking", "$import monai_ext.handlers",
                                       "$import monai_ext.pseudo.store", "$from PIL import Image"]
    cfg.update(
        {
            "epochs": 2,
            "learning_rate": 0.01,
            "batch_size": 2,
            "hyperparameters": {"epochs": "@epochs", "learning_rate": "@learning_rate", "batch_size": "@batch_size",
                                "network": "UNet(4, 8)"},
            "is_not_rank0": "$monai_ext.tracking.tracking_disabled(@tracking_uri) or (torch.distributed.is_available()"
            " and torch.distributed.is_initialized() and torch.distributed.get_rank() > 0)",
            "train_data": "$[dict(zip(('image', 'label'), monai.data.create_test_image_2d(32, 32, num_objs=4, "
            "rad_max=6, num_seg_classes=1, channel_dim=0, random_state=np.random.RandomState(i)))) for i in range(4)]",
            "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
            "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": "@learning_rate"},
            # A toy self-training schedule with the real round machinery: the builder only returns statistics.
            "pseudo_store": {"_target_": "monai_ext.pseudo.store.PseudoLabelStore", "root": "$@output_dir + '/pseudo'"},
            "pseudo_builder": "$lambda r, engine: {'threshold': 0.5 + 0.1 * r, 'accepted': 10 + r, "
            "'scores': [0.1 * (i % 10) for i in range(50 + r)]}",
            # Each round writes an overlay PNG, as real bundles do for inspection.
            "overlay_writer": "$lambda r, stats, engine: (os.makedirs(@output_dir + '/overlays', exist_ok=True), "
            "Image.fromarray(np.full((8, 8), 40 * r, np.uint8)).save(@output_dir + f'/overlays/round_{r}.png'))",
            "train": {
                "preprocessing": {"_target_": "EnsureTyped", "keys": ["image", "label"], "dtype": "$torch.float32"},
                "dataset": {"_target_": "Dataset", "data": "@train_data", "transform": "@train#preprocessing"},
                "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": "@batch_size",
                               "shuffle": False, "num_workers": 0},
                "inferer": {"_target_": "SimpleInferer"},
                "handlers": [
                    {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
                     "save_final": True, "final_filename": "model.pt", "save_key_metric": False},
                    {"_target_": "monai_ext.handlers.PseudoLabelRounds", "store": "@pseudo_store",
                     "builder": "@pseudo_builder", "num_rounds": 2, "epochs_per_round": 1,
                     "callbacks": ["@overlay_writer"]},
                    {"_target_": "monai_ext.tracking.MLflowExtras", "params": "@hyperparameters",
                     "artifacts": ["$@ckpt_dir + '/model.pt'"], "overlay_dir": "$@output_dir + '/overlays'"},
                    {"_target_": "StatsHandler", "tag_name": "train_loss",
                     "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
                ],
                "trainer": {
                    "_target_": "SupervisedTrainer",
                    "max_epochs": "@epochs",
                    "device": "@device",
                    "train_data_loader": "@train#dataloader",
                    "network": "@network",
                    "loss_function": "@loss",
                    "optimizer": "@optimizer",
                    "inferer": "@train#inferer",
                    "train_handlers": "@train#handlers",
                    "amp": False,
                },
            },
            "initialize": ["$monai.utils.set_determinism(seed=0)"],
            "run": ["$@train#trainer.run()"],
        }
    )
    return cfg


_LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _threshold_state_dict(gain: float = 20.0) -> dict[str, torch.Tensor]:
    """1x1 conv weights with ``logit1 - logit0 = 2 * gain * (x - 0.5)``: argmax is ``x > 0.5``."""
    return {
        "weight": torch.tensor([[[[-gain]]], [[[gain]]]], dtype=torch.float32),
        "bias": torch.tensor([0.5 * gain, -0.5 * gain], dtype=torch.float32),
    }


def make_toy_bundle(
    root: str | Path, name: str = "toy_cells", network: str = "threshold", with_model: bool = True, seed: int = 0
) -> Path:
    """Write the toy bundle to ``root/name`` and return its folder.

    Args:
        root: parent folder (a test's ``tmp_path``).
        name: bundle folder name (MONAI Label takes the model name and task type from it).
        network: ``"threshold"`` (known predictions) or ``"unet"`` (trainable).
        with_model: write ``models/model.pt`` (a plain state_dict).
        seed: seed of the UNet's initial weights.
    """
    if network not in ("threshold", "unet"):
        raise ValueError(f"network must be 'threshold' or 'unet', got {network!r}")
    bundle = Path(root) / name
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "docs").mkdir(exist_ok=True)
    net_cfg = _THRESHOLD_NET if network == "threshold" else _UNET
    files = {
        "configs/metadata.json": _metadata(name),
        "configs/inference.json": _inference(net_cfg),
        "configs/train.json": _train(net_cfg),
    }
    for rel, cfg in files.items():
        (bundle / rel).write_text(json.dumps(cfg, indent=4))
    (bundle / "configs" / "logging.conf").write_text(_LOGGING_CONF)
    (bundle / "LICENSE").write_text("Apache License, Version 2.0\n")
    (bundle / "docs" / "README.md").write_text(f"# {name}\n\nToy bundle written by the tests.\n")
    if with_model:
        if network == "threshold":
            state = _threshold_state_dict()
        else:
            from monai.networks.nets import UNet

            torch.manual_seed(seed)
            args = {k: v for k, v in _UNET.items() if k != "_target_"}
            state = UNet(**args).state_dict()
        (bundle / "models").mkdir(exist_ok=True)
        torch.save(state, bundle / "models" / "model.pt")
    return bundle


def dot_mask(height: int = 96, width: int = 128, size: int = 3, step: int = 5) -> np.ndarray:
    """``(H, W)`` bool grid of ``size`` x ``size`` squares every ``step`` pixels, minus one corner square.

    96 x 128 gives 19 x 25 - 1 = 474 squares: more than 255 instances, on a non-square image whose
    missing top-left square makes a transposed or flipped answer detectable.
    """
    ys = np.arange(1, height - size, step)
    xs = np.arange(1, width - size, step)
    offs = np.arange(size)
    in_rows = np.isin(np.arange(height), (ys[:, None] + offs).ravel())
    in_cols = np.isin(np.arange(width), (xs[:, None] + offs).ravel())
    mask = in_rows[:, None] & in_cols[None, :]
    mask[: ys[0] + size, : xs[0] + size] = False
    return mask


def write_dot_image(path: str | Path, height: int = 96, width: int = 128) -> tuple[Path, np.ndarray]:
    """Write the dot grid as an 8-bit grayscale PNG (dots 230, background 20); returns (path, mask)."""
    mask = dot_mask(height, width)
    img = np.where(mask, 230, 20).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path, mask
