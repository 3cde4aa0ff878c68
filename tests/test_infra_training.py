"""Shared training infrastructure: guarded step, atomic checkpoints, resume after SIGKILL, rounds on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader

from monai_ext.engines import GuardedTrainer
from monai_ext.errors import TrainingError
from monai_ext.handlers import PseudoLabelRounds, TrainingCheckpoint
from monai_ext.pseudo import PseudoLabelStore
from monai_ext.transforms import LoadPseudoLabeld
from monai_ext.utils import atomic_save

PROGRAM = Path(__file__).parent / "programs" / "tiny_resumable_training.py"


def _run(ckpt_dir: Path, epochs: int) -> str:
    out = subprocess.run(
        [sys.executable, str(PROGRAM), str(ckpt_dir), str(epochs)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    reference = _run(tmp_path / "ref", 4)
    ckpt = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(PROGRAM), str(ckpt), "4", "0.15"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    last = ckpt / "last.pt"
    while time.time() < deadline and not last.exists():
        time.sleep(0.05)
    assert last.exists(), "the first checkpoint never appeared"
    time.sleep(0.3)  # now mid-way through a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved_epoch = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 4
    resumed = _run(ckpt, 4)
    assert resumed == reference


def test_resume_refuses_corrupt_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    TrainingCheckpoint(tmp_path, {"network": net}).attach(engine)
    with pytest.raises(RuntimeError, match="unreadable"):
        engine.run([0], max_epochs=1)


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):  # noqa: D401 - pickling hook
            raise RuntimeError("serialisation failed")

    with pytest.raises(RuntimeError):
        atomic_save({"bad": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def _nan_trainer(nonfinite: str) -> tuple[GuardedTrainer, torch.nn.Module]:
    net = torch.nn.Linear(3, 1)
    data = [{"image": torch.full((3,), float("nan")), "label": torch.zeros(1), "meta": {"id": "bad_sample"}}]
    trainer = GuardedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=1),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        nonfinite=nonfinite,
    )
    return trainer, net


def test_nonfinite_loss_raises_and_leaves_weights_untouched() -> None:
    trainer, net = _nan_trainer("raise")
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(TrainingError, match="bad_sample"):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_nonfinite_loss_skip_policy_counts_batches() -> None:
    trainer, net = _nan_trainer("skip")
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    assert trainer.state.skipped_batches == 1
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_pseudo_label_rounds_are_built_once_and_survive_restart(tmp_path: Path) -> None:
    store = PseudoLabelStore(tmp_path / "pseudo")
    built: list[int] = []

    def builder(rnd: int, engine: Engine) -> dict:
        built.append(rnd)
        for i in range(3):
            store.write(rnd, f"img{i}", pseudo_label=np.full((4, 4), rnd * 10 + i, dtype=np.int32))
        return {"accepted": 3 + rnd, "threshold": 0.5}

    seen: list[int] = []
    loader = LoadPseudoLabeld(store)

    def step(engine: Engine, batch: int) -> None:
        seen.append(int(loader({"meta": {"id": "img1"}})["pseudo_label"][0, 0, 0]))

    def make_engine() -> Engine:
        engine = Engine(step)
        PseudoLabelRounds(store, builder, num_rounds=3, epochs_per_round=2).attach(engine)
        return engine

    engine = make_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=3), lambda e: e.terminate())
    engine.run([0], max_epochs=6)
    assert built == [0, 1] and store.rounds_done() == [0, 1]
    assert seen == [1, 1, 11]
    assert engine.state.metrics["pseudo_accepted"] == 4.0

    # a fresh process resuming at epoch 3 reuses round 1 and only builds round 2
    built.clear()
    seen.clear()
    engine = make_engine()
    engine.load_state_dict({"epoch": 3, "max_epochs": 6, "epoch_length": 1})
    engine.run([0], max_epochs=6)
    assert built == [2]
    assert seen == [11, 21, 21]
    assert store.stats(2)["accepted"] == 5
