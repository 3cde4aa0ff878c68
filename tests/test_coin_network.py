"""COIN student (seg + edge decoders), its loss, and the transforms around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.losses.seg_edge import ForegroundDiceLoss, SegEdgeLoss
from monai_ext.networks.coin import COINDeepLabV3Plus, COINUNet, split_outputs
from monai_ext.transforms.coin import (
    IGNORE_INDEX,
    COINInstancesd,
    InstanceTargetsd,
    PseudoTargetsd,
    RandHEDJitterd,
    instance_confidence,
    instances_to_targets,
)


@pytest.mark.parametrize("shape", [(64, 64), (50, 77)])
def test_unet_shapes_and_torchscript(shape) -> None:
    net = COINUNet(features=(4, 8, 8, 16, 16, 4)).eval()
    x = torch.rand(2, 3, *shape)
    with torch.no_grad():
        y = net(x)
        seg, edge = split_outputs(y)
        assert y.shape == (2, 4, *shape) and seg.shape == edge.shape == (2, 2, *shape)
        scripted = torch.jit.script(net)
        assert torch.allclose(scripted(x), y, atol=1e-5)


def test_deeplab_variant_is_traceable() -> None:
    net = COINDeepLabV3Plus("resnet18", width=16, rates=(2, 4, 6)).eval()
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 4, 64, 48)
        traced = torch.jit.trace(net, x)
        assert torch.allclose(traced(x), y, atol=1e-4)


def test_seg_edge_loss_ignores_255() -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, 4, 16, 16, requires_grad=True)
    seg = torch.randint(0, 2, (2, 1, 16, 16))
    edge = torch.randint(0, 2, (2, 1, 16, 16))
    loss = SegEdgeLoss()
    base = loss(pred, seg, edge)
    terms = loss.terms()
    assert set(terms) == {"loss_seg_ce", "loss_seg_dice", "loss_edge_ce", "loss_edge_dice"}
    base.backward()
    assert torch.isfinite(pred.grad).all()
    # changing the logits on ignored pixels does not change the loss
    seg2 = seg.clone()
    seg2[:, :, :8] = IGNORE_INDEX
    p2 = pred.detach().clone()
    a = loss(p2, seg2, edge)
    p2[:, :2, :8] += 5.0
    assert torch.allclose(loss(p2, seg2, edge), a)
    # a fully ignored batch gives a finite loss and zero gradient on the seg head
    full = torch.full_like(seg, IGNORE_INDEX)
    p3 = pred.detach().clone().requires_grad_(True)
    out = loss(p3, full, full)
    out.backward()
    assert torch.isfinite(out) and float(p3.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError):
        loss(pred[:, :2], seg, edge)
    # perfect prediction -> dice term ~ 0
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[:, 2:6, 2:6] = 1
    logits = torch.stack([(1 - t) * 20.0, t * 20.0], 1).float()
    assert float(ForegroundDiceLoss()(logits, t)) < 1e-3


def test_targets_transforms() -> None:
    inst = np.zeros((12, 12), np.int32)
    inst[2:6, 2:6] = 1
    inst[2:6, 6:10] = 2
    inst[8:11, 8:11] = -1
    seg, edge = instances_to_targets(inst)
    assert seg[3, 3] == 1 and seg[0, 0] == 0 and seg[9, 9] == IGNORE_INDEX
    assert edge[3, 5] == 1 and edge[3, 6] == 1 and edge[3, 3] == 0 and edge[9, 9] == IGNORE_INDEX
    d = PseudoTargetsd()({"instances": inst[None]})
    assert d["seg"].shape == (1, 12, 12) and d["seg"].dtype == np.int64
    d = InstanceTargetsd()({"label": np.maximum(inst, 0)[None]})
    assert (d["seg"] != IGNORE_INDEX).all() and d["edge"].sum() > 0


def test_hed_jitter_is_seeded_and_valid() -> None:
    img = np.random.default_rng(0).uniform(0.3, 0.9, (3, 8, 8)).astype(np.float32)
    t = RandHEDJitterd(prob=1.0)
    t.set_random_state(1)
    a = t({"image": img})["image"]
    t.set_random_state(1)
    b = t({"image": img})["image"]
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1 and not np.allclose(a, img)
    # the identity jitter returns the image: the stain round trip is exact (no clamped residual channel)
    ident = RandHEDJitterd(prob=1.0, sigma_scale=0.0, sigma_shift=0.0)({"image": img})["image"]
    assert np.allclose(ident, img, atol=1e-5)


def test_postprocessing_to_instances_and_confidence() -> None:
    fg = np.zeros((32, 40), np.float32)
    fg[4:14, 4:14] = 1
    fg[20:30, 20:36] = 1
    edge = np.zeros_like(fg)
    edge[20:30, 27:29] = 1  # a boundary splitting the second blob
    prob = np.stack([1 - fg, fg, 1 - edge, edge])
    d = COINInstancesd(probabilities=True, edge_threshold=0.5, marker_erosion=0, min_marker_size=4, min_size=4)({"pred": torch.as_tensor(prob)})
    inst = d["pred"].numpy()[0]
    assert inst.dtype == np.int32 and inst.max() == 3
    assert set(d["scores"]) == {1, 2, 3} and all(0.9 < v <= 1.0 for v in d["scores"].values())
    logits = torch.as_tensor(np.log(np.clip(prob, 1e-4, 1)))
    d2 = COINInstancesd(edge_threshold=0.5, marker_erosion=0, min_marker_size=4, min_size=4)({"pred": logits})
    assert d2["pred"].max() == 3
    assert instance_confidence(inst, fg)[1] == pytest.approx(1.0)
    from monai_ext.errors import DataError

    with pytest.raises(DataError):
        COINInstancesd()({"pred": torch.zeros(2, 8, 8)})
