"""Training pictures: validation overlays from a real MONAI evaluator and per-round plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from PIL import Image

from monai_ext.handlers import RoundPlot, ValidationOverlays


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] > 0.5).long()


def test_validation_overlays_from_evaluator(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = []
    for i in range(3):
        lab = np.zeros((1, 32, 32), np.int64)
        lab[0, 4:12, 4:12], lab[0, 20:28, 18:30] = 1, 2
        data.append({"image": torch.as_tensor((lab > 0) * 0.8 + 0.1 * rng.random((1, 32, 32)), dtype=torch.float32),
                     "label": torch.as_tensor(lab), "meta": {"id": f"s{i}"}})
    ev = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(data, batch_size=2),
                             network=_Identity())
    ValidationOverlays(tmp_path, max_images=2).attach(ev)
    ev.run()
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == ["val_epoch001_s0.png", "val_epoch001_s1.png"]
    assert Image.open(tmp_path / files[0]).size[0] >= 32


def test_round_plot(tmp_path: Path) -> None:
    path = RoundPlot(tmp_path)(2, {"scores": list(np.linspace(0, 1, 50)), "threshold": 0.7, "accepted": 12})
    assert path is not None and path.name == "pseudo_round02.png"
    assert Image.open(path).size[0] > 100
