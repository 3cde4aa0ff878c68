"""TrainingCheckpoint keeps the whole state of wrapper-like modules (an EMA teacher's update count), unwraps only
DataParallel / DDP, still loads older checkpoints, and names the file and the problem when it cannot resume."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from monai_ext.engines.coin import EMATeacher
from monai_ext.errors import TrainingError
from monai_ext.handlers import TrainingCheckpoint, unwrap_module
from monai_ext.utils import atomic_save


def _engine(ckpt: Path, save_dict: dict) -> tuple[Engine, TrainingCheckpoint]:
    engine = Engine(lambda e, b: None)
    handler = TrainingCheckpoint(ckpt, save_dict)
    handler.attach(engine)
    return engine, handler


def test_ema_teacher_state_survives_a_restart(tmp_path: Path) -> None:
    student = torch.nn.Linear(3, 2)
    teacher = EMATeacher(student, decay=0.99)
    for _ in range(5):
        teacher.update(student)
    engine, _ = _engine(tmp_path, {"network": student, "teacher": teacher})
    engine.run([0], max_epochs=1)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["teacher"]
    assert int(saved["num_updates"]) == 5 and "module.weight" in saved

    fresh_student = torch.nn.Linear(3, 2)
    fresh = EMATeacher(fresh_student, decay=0.99)
    engine, handler = _engine(tmp_path, {"network": fresh_student, "teacher": fresh})
    engine.run([0], max_epochs=2)
    assert handler.resumed_from == 1 and int(fresh.num_updates) == 5
    torch.testing.assert_close(fresh.module.weight, teacher.module.weight)


def test_unwrap_only_parallel_wrappers() -> None:
    net = torch.nn.Linear(2, 2)
    assert unwrap_module(torch.nn.DataParallel(net)) is net
    teacher = EMATeacher(net)
    assert unwrap_module(teacher) is teacher


def test_older_checkpoint_with_only_the_inner_module_still_loads(tmp_path: Path, caplog) -> None:
    student = torch.nn.Linear(3, 2)
    teacher = EMATeacher(student)
    with torch.no_grad():
        teacher.module.weight.fill_(0.5)
    atomic_save({"teacher": teacher.module.state_dict(), "epoch": 1}, tmp_path / "last.pt")
    fresh = EMATeacher(torch.nn.Linear(3, 2))
    engine, _ = _engine(tmp_path, {"teacher": fresh})
    with caplog.at_level(logging.WARNING):
        engine.run([0], max_epochs=2)
    assert torch.all(fresh.module.weight == 0.5)
    assert "older checkpoint" in caplog.text


def test_resume_errors_name_the_checkpoint(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    atomic_save({"network": net.state_dict(), "epoch": 1}, tmp_path / "last.pt")
    engine, _ = _engine(tmp_path, {"network": net, "optimizer": torch.optim.SGD(net.parameters(), 0.1)})
    with pytest.raises(TrainingError, match=r"last\.pt: it lacks \['optimizer'\]"):
        engine.run([0], max_epochs=2)
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    engine, _ = _engine(tmp_path, {"network": net})
    with pytest.raises(TrainingError, match="unreadable"):
        engine.run([0], max_epochs=2)
