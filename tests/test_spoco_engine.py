"""SPOCO trainer (student + EMA teacher on two views), inferer, WGAN shape critic, and a short end-to-end fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_ext.engines.spoco import SpocoInferer, SpocoTrainer, load_teacher
from monai_ext.losses.spoco import DiscriminativeLoss, SpocoLoss
from monai_ext.losses.spoco_wgan import ShapeCritic, WGANShapeLoss
from monai_ext.networks.embedding import EMATeacher, EmbeddingUNet


def _data(n: int = 4, size: int = 24) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        lab = np.zeros((1, size, size), np.int64)
        lab[0, 2:10, 2:10] = 1
        lab[0, 12:20, 3:11] = 2
        img = rng.random((3, size, size)).astype(np.float32)
        img[:, lab[0] > 0] += 0.5
        out.append({"image": img, "image2": img[::-1].copy(), "label": lab, "meta": {"id": f"s{i}"}})
    return out


def _trainer(loss: SpocoLoss, teacher: bool, tmp_path: Path | None = None, **kw) -> tuple[SpocoTrainer, EmbeddingUNet, EMATeacher | None]:
    net = EmbeddingUNet(2, 3, 4, features=(4, 8))
    ema = EMATeacher(net, momentum=0.99) if teacher else None
    loader = DataLoader(Dataset(_data()), batch_size=2)
    trainer = SpocoTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=loader, network=net,
                           optimizer=torch.optim.Adam(net.parameters(), 1e-3), spoco_loss=loss, teacher=ema,
                           teacher_path=None if tmp_path is None else tmp_path / "teacher.pt", **kw)
    return trainer, net, ema


def test_spoco_step_updates_teacher_and_logs_every_term(tmp_path: Path) -> None:
    trainer, net, ema = _trainer(SpocoLoss(seed=0), True, tmp_path)
    start = [p.clone() for p in ema.teacher.parameters()]
    trainer.run()
    assert set(trainer.state.loss_terms) == {"pull", "push", "reg", "unlabeled_push", "object", "consistency"}
    assert int(ema.num_updates) == trainer.state.iteration == 4
    assert any(not torch.equal(a, b) for a, b in zip(start, ema.teacher.parameters()))
    saved = load_teacher(EmbeddingUNet(2, 3, 4, features=(4, 8)), tmp_path / "teacher.pt", required=True)
    assert all(torch.equal(a, b) for a, b in zip(saved.parameters(), ema.teacher.parameters()))


def test_discriminative_mode_needs_no_teacher_and_spoco_does() -> None:
    trainer, _, ema = _trainer(DiscriminativeLoss(), False)
    trainer.run()
    assert ema is None and trainer.state.loss_terms["consistency"] == 0.0
    with pytest.raises(ValueError, match="teacher"):
        _trainer(SpocoLoss(), False)


def test_wgan_shape_term_trains_critic(tmp_path: Path) -> None:
    shape = WGANShapeLoss(ShapeCritic(2, (4, 8)), critic_iters=2)
    before = [p.clone() for p in shape.critic.parameters()]
    trainer, _, _ = _trainer(SpocoLoss(seed=0), True, None, shape_loss=shape, gan_warmup=2)
    trainer.run()
    terms = trainer.state.loss_terms
    assert {"shape", "critic", "wasserstein"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, shape.critic.parameters()))
    state = shape.state_dict()
    again = WGANShapeLoss(ShapeCritic(2, (4, 8)))
    again.load_state_dict(state)
    assert again.optimizer.state_dict()["state"]


def test_inferer_outputs_student_or_both() -> None:
    net = EmbeddingUNet(2, 3, 4, features=(4, 8)).eval()
    x = torch.rand(1, 3, 30, 22)
    assert SpocoInferer()(x, net).shape == (1, 4, 30, 22)
    both = SpocoInferer(teacher=EMATeacher(net), teacher_blur=1.0)(x, net)
    assert both.shape == (1, 8, 30, 22)
    sw = SpocoInferer(teacher=net, roi_size=(16, 16))(x, net)
    assert sw.shape == (1, 8, 30, 22)
    assert load_teacher(net, "/nonexistent/teacher.pt") is None
    with pytest.raises(FileNotFoundError):
        load_teacher(net, "/nonexistent/teacher.pt", required=True)


def test_nonfinite_loss_raises_training_error() -> None:
    from monai_ext.errors import TrainingError

    data = _data(2)
    data[0]["image"][:] = np.nan
    net = EmbeddingUNet(2, 3, 4, features=(4, 8))
    trainer = SpocoTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(Dataset(data), batch_size=2),
                           network=net, optimizer=torch.optim.Adam(net.parameters()), spoco_loss=SpocoLoss(),
                           teacher=EMATeacher(net))
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.run()
