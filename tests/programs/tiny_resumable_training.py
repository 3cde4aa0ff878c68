"""A small but real training run used by the resume tests: GuardedTrainer + TrainingCheckpoint + EpochSeeder.

Usage: python tiny_resumable_training.py <ckpt_dir> <epochs> [sleep_per_iter]
Prints the final weight checksum on the last line.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from monai_ext.engines import GuardedTrainer
from monai_ext.handlers import EpochSeeder, TrainingCheckpoint
from monai_ext.utils import set_seed


def main() -> None:
    ckpt_dir, epochs = sys.argv[1], int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    set_seed(0)
    rng = np.random.default_rng(0)
    data = [
        {"image": rng.random((1, 16, 16), dtype=np.float32), "label": (rng.random((1, 16, 16)) > 0.5).astype(np.float32)}
        for _ in range(12)
    ]
    ds = Dataset(data, Compose([RandFlipd(["image", "label"], prob=0.5), RandGaussianNoised("image", prob=0.5)]))
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-2)

    class Slow(GuardedTrainer):
        def after_step(self, engine: GuardedTrainer) -> None:
            time.sleep(pause)

    trainer = Slow(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.BCEWithLogitsLoss(),
    )
    TrainingCheckpoint(ckpt_dir, {"network": net, "optimizer": opt, "trainer": trainer}).attach(trainer)
    EpochSeeder(123, ds).attach(trainer)
    trainer.run()
    checksum = sum(float(p.double().sum()) for p in net.parameters())
    print(f"epochs={trainer.state.epoch} checksum={checksum:.10f}")


if __name__ == "__main__":
    main()
