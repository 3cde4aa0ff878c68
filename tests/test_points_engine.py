"""CKSTrainer: one Ignite step updates both models (CKS) or the principal alone (supervised); CKS metrics."""

from __future__ import annotations

import math
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_ext.engines.cks import CKSTrainer
from monai_ext.errors import TrainingError
from monai_ext.handlers.cks_metrics import CKSMetrics, cks_metrics
from monai_ext.losses.cks import CKSLoss
from monai_ext.losses.detection import PointDetectionLoss
from monai_ext.networks.collaborator import Collaborator
from monai_ext.networks.lacss import LacssNet
from monai_ext.transforms.points import PadPointsd, PointsFromLabeld


def _data(n: int = 4, size: int = 64) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        lab = np.zeros((1, size, size), np.int32)
        img = np.zeros((1, size, size), np.float32)
        yy, xx = np.mgrid[:size, :size]
        for i, (cy, cx) in enumerate(rng.uniform(10, size - 10, (4, 2)), start=1):
            disc = np.hypot(yy - cy, xx - cx) < 7
            lab[0][disc] = i
            img[0][disc] = 1.0
        d = PointsFromLabeld("label")({"image": img + rng.normal(0, 0.1, img.shape).astype(np.float32), "label": lab})
        d = PadPointsd("points", 8)(d)
        d["prior_d"] = np.float32(8.0)
        d["meta"] = {"id": f"s{k}"}
        out.append(d)
    return out


def _trainer(mode: str, collaborator: bool = True) -> tuple[CKSTrainer, LacssNet, Collaborator]:
    torch.manual_seed(0)
    net = LacssNet(fpn_channels=16, crop_size=32)
    col = Collaborator()
    params = list(net.parameters()) + (list(col.parameters()) if collaborator else [])
    loader = DataLoader(Dataset(_data()), batch_size=2)
    trainer = CKSTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=torch.optim.Adam(params, 1e-3), collaborator=col if mode == "cks" else None,
        detection_loss=PointDetectionLoss(), cks_loss=CKSLoss(d=8.0) if mode == "cks" else None, mode=mode,
        warmup_steps=1,
    )
    return trainer, net, col


@pytest.mark.parametrize("mode", ["cks", "supervised"])
def test_one_epoch_updates_the_right_models(mode: str) -> None:
    trainer, net, col = _trainer(mode)
    before_p = [p.detach().clone() for p in net.parameters()]
    before_c = [p.detach().clone() for p in col.parameters()]
    from monai.handlers import from_engine

    from monai_ext.engines.cks import CKSLossTermsLogger

    logger = CKSLossTermsLogger()
    logger.attach(trainer)
    trainer.run()
    assert math.isfinite(float(from_engine(["loss"], first=True)(trainer.state.output)))
    assert "train_loss_det_focal" in trainer.state.metrics
    expected = {"loss_det_focal", "loss_det_offset", "n_cells"} | (
        {"loss_m", "loss_s", "loss_b", "loss_mc"} if mode == "cks" else {"loss_sup"})
    assert set(trainer.state.loss_terms) == expected
    assert trainer.state.loss_terms["n_cells"] == 8
    assert any(not torch.equal(a, b) for a, b in zip(before_p, net.parameters()))
    changed_c = any(not torch.equal(a, b) for a, b in zip(before_c, col.parameters()))
    assert changed_c == (mode == "cks")


def test_collaborator_must_be_optimised() -> None:
    with pytest.raises(ValueError, match="collaborator"):
        _trainer("cks", collaborator=False)


def test_supervised_needs_labels() -> None:
    from monai_ext.engines.cks import cks_step_losses

    batch = {"image": torch.randn(1, 1, 64, 64), "points": torch.tensor([[[10.0, 10.0]]])}
    with pytest.raises(TrainingError, match="label"):
        cks_step_losses(LacssNet(fpn_channels=16, crop_size=32), None, batch, PointDetectionLoss(), None,
                        mode="supervised")
    with pytest.raises(ValueError, match="at least 64 px"):
        LacssNet(fpn_channels=16, crop_size=32)(torch.randn(1, 1, 32, 32), batch["points"])


def test_cks_metrics_table_and_groups() -> None:
    gt = np.zeros((10, 10), np.int32)
    gt[:5, :5], gt[5:, 5:] = 1, 2
    pred = np.zeros((10, 10), np.int32)
    pred[:5, :5] = 1  # perfect
    pred[5:, 5:8] = 2  # IoU 0.6: TP at 0.5, FP at 0.75
    pred[0, 9] = 3  # tiny false positive, lowest score
    scores = {1: 0.9, 2: 0.8, 3: 0.3}
    res = cks_metrics([(gt, pred, scores, "A"), (gt, pred, scores, "B")])
    # AP50: TP, TP, FP -> (1 * 1 + 1 * 1) / 2 per image, pooled: P = 1, 1, 1, 1 at the four TPs
    assert res["ap50"] == pytest.approx(1.0)
    # AP75: ranks (0.9 TP, 0.9 TP, 0.8 FP, 0.8 FP, ...): (1 + 1) / 4 GT
    assert res["ap75"] == pytest.approx(0.5)
    assert res["ap50/A"] == pytest.approx(1.0) and res["n_gt"] == 4
    # Dice with score >= 0.5: predictions 1 and 2 only
    assert 0 < res["dice"] < 1
    m = CKSMetrics("ap50")
    m.reset()
    m.update([{"pred": pred[None], "label": gt[None], "scores": scores, "group": ""}])
    assert m.compute() == pytest.approx(1.0)
    with pytest.raises(KeyError):
        CKSMetrics("nope").compute()


def test_train_val_records(tmp_path) -> None:
    from monai_ext.data.readers.registry import get_reader
    from monai_ext.data.writers import write_a431
    from monai_ext.engines.cks import train_val_records

    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.int32)
    mask[10:20, 10:20] = 1
    items = [{"image": img, "mask": mask, "locations": np.array([[15.0, 15.0]])} for _ in range(6)]
    write_a431(tmp_path / "with_masks", items, [(img, mask)])
    train, val = train_val_records(get_reader("a431", tmp_path / "with_masks"), 0.34, seed=0)
    assert len(train) == 4 and len(val) == 2 and all(r["split"] == "train" for r in val)
    no_masks = [{"image": img, "locations": np.array([[15.0, 15.0]])} for _ in range(3)]
    write_a431(tmp_path / "points_only", no_masks, [(img, mask)])
    train, val = train_val_records(get_reader("a431", tmp_path / "points_only"), 0.34, seed=0)
    assert len(train) == 3 and [r["split"] for r in val] == ["test"]


def test_border_start_steps_keeps_l_b_away_from_the_principal() -> None:
    """Before ``border_start_steps`` L_B trains the border net only: with every other term weighted 0 the
    principal stays unchanged while the border net learns."""
    torch.manual_seed(0)
    net = LacssNet(fpn_channels=16, crop_size=32)
    col = Collaborator()
    loader = DataLoader(Dataset(_data()), batch_size=2)
    trainer = CKSTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=torch.optim.Adam(list(net.parameters()) + list(col.parameters()), 1e-3), collaborator=col,
        detection_loss=PointDetectionLoss(), cks_loss=CKSLoss(d=8.0), mode="cks",
        loss_weights={"det": 0.0, "s": 0.0, "mc": 0.0, "m": 0.0, "b": 1.0}, border_start_steps=100,
    )
    before_p = [p.detach().clone() for p in net.parameters()]
    before_b = [p.detach().clone() for p in col.border.parameters()]
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before_p, net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_b, col.border.parameters()))
