"""A small real training run whose disk "fills up" after the first checkpoint (used by the reliability tests).

Usage: python full_disk_training.py <ckpt_dir> <epochs> [file_size_limit_bytes]
With a limit, after epoch 1's checkpoint the process may no longer write files larger than the limit (RLIMIT_FSIZE,
with SIGXFSZ ignored so writes fail with EFBIG as on a full disk). Prints the final epoch on the last line.
"""

from __future__ import annotations

import logging
import resource
import signal
import sys

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader

from monai_ext.engines import GuardedTrainer
from monai_ext.handlers import TrainingCheckpoint
from monai_ext.utils import set_seed


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    ckpt_dir, epochs = sys.argv[1], int(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    set_seed(0)
    rng = np.random.default_rng(0)
    data = [{"image": rng.random((1, 8, 8), dtype=np.float32), "label": rng.random((1, 8, 8), dtype=np.float32)}
            for _ in range(4)]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    trainer = GuardedTrainer(device=torch.device("cpu"), max_epochs=epochs, network=net, optimizer=opt,
                             train_data_loader=DataLoader(data, batch_size=2), loss_function=torch.nn.MSELoss())
    TrainingCheckpoint(ckpt_dir, {"network": net, "optimizer": opt, "trainer": trainer},
                       final_model_path=f"{ckpt_dir}/model.pt").attach(trainer)

    def fill_disk(engine: GuardedTrainer) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    if limit is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), fill_disk)  # after the checkpoint handler
    trainer.run()
    print(f"epochs={trainer.state.epoch}")


if __name__ == "__main__":
    main()
