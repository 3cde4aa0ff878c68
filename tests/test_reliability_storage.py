"""Disk trouble during training: a full disk (simulated with a file size limit in a subprocess) stops training with
a StorageError naming the file, the previous checkpoint stays loadable, and the same command resumes from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_ext.errors import StorageError
from monai_ext.pseudo import PseudoLabelStore

PROGRAM = Path(__file__).parent / "programs" / "full_disk_training.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(ckpt: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROGRAM), str(ckpt), *args], capture_output=True, text=True,
                          timeout=300, env=ENV)


def test_full_disk_keeps_last_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    ckpt = tmp_path / "models"
    proc = _run(ckpt, "3", "512")
    assert proc.returncode != 0
    err = proc.stderr
    assert "StorageError" in err and f"{ckpt / 'last.pt'}: cannot write the checkpoint of epoch 2" in err, err[-3000:]
    assert "the checkpoint of epoch 1" in err and "is intact" in err and "re-run the same command" in err
    state = torch.load(ckpt / "last.pt", weights_only=True)  # the earlier checkpoint is whole
    assert state["epoch"] == 1 and {"network", "optimizer", "trainer", "rng"} <= set(state)
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]  # no temp file, no half-written model.pt

    done = _run(ckpt, "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "epochs=3" and "resumed from" in done.stderr
    assert torch.load(ckpt / "last.pt", weights_only=True)["epoch"] == 3 and (ckpt / "model.pt").is_file()


def test_store_write_failure_names_the_file_and_keeps_finished_rounds(tmp_path: Path) -> None:
    store = PseudoLabelStore(tmp_path / "pseudo")
    store.write(0, "a", pseudo_label=np.ones((4, 4), np.int32))
    store.finish(0, {"accepted": 1})
    (tmp_path / "pseudo" / "round_01").write_text("a file where the round folder should be")
    with pytest.raises(OSError, match="round_01"):
        store.write(1, "a", pseudo_label=np.zeros((4, 4), np.int32))
    assert store.rounds_done() == [0] and store.current() == 0
    assert int(store.load("a")["pseudo_label"][0, 0]) == 1


def test_storage_error_is_an_oserror_with_path_and_errno() -> None:
    exc = StorageError("cannot write", "/x/last.pt", 28)
    assert isinstance(exc, OSError) and exc.errno == 28 and exc.path == "/x/last.pt"
    assert str(exc) == "/x/last.pt: cannot write"


def test_round_interrupted_while_building_is_rebuilt_and_earlier_rounds_are_not(tmp_path: Path) -> None:
    from ignite.engine import Engine

    from monai_ext.handlers import PseudoLabelRounds

    store = PseudoLabelStore(tmp_path / "pseudo")
    built: list[int] = []

    def builder(rnd: int, engine: Engine) -> dict:
        built.append(rnd)
        for i in range(2):
            store.write(rnd, f"s{i}", pseudo_label=np.full((2, 2), rnd, np.int32))
        return {"n": 2}

    store.write(0, "s0", pseudo_label=np.zeros((2, 2), np.int32))  # round 0 complete
    store.write(0, "s1", pseudo_label=np.zeros((2, 2), np.int32))
    store.finish(0, {"n": 2})
    store.write(1, "s0", pseudo_label=np.full((2, 2), 99, np.int32))  # round 1 half-written when the crash came
    assert store.rounds_done() == [0] and store.current() == 0

    engine = Engine(lambda e, b: None)
    PseudoLabelRounds(store, builder, num_rounds=2, epochs_per_round=1).attach(engine)
    engine.load_state_dict({"epoch": 1, "max_epochs": 2, "epoch_length": 1})  # resumed after epoch 1
    engine.run([0], max_epochs=2)
    assert built == [1] and store.rounds_done() == [0, 1] and store.current() == 1
    assert int(store.load("s0")["pseudo_label"][0, 0]) == 1  # the half-written file was replaced
