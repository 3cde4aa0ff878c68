"""EM losses: CE with ignore label, weighted heatmap MSE, class-focused prototype contrastive loss and its memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_ext.losses.contrastive import ClassFocusedContrastiveLoss, PrototypeMemory, kmeans, masked_mean, \
    sample_anchors
from monai_ext.losses.em import IgnoreCrossEntropyLoss, WeightedHeatmapLoss


def test_ce_ignores_255_and_all_ignored_is_zero() -> None:
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.randint(0, 2, (2, 1, 8, 8))
    masked = target.clone()
    masked[:, :, :4] = 255
    ref = F.cross_entropy(logits[:, :, 4:], target[:, 0, 4:])
    assert float(IgnoreCrossEntropyLoss()(logits, masked)) == pytest.approx(float(ref), rel=1e-5)
    zero = IgnoreCrossEntropyLoss()(logits, torch.full_like(target, 255))
    assert float(zero) == 0.0
    zero.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_weighted_heatmap_loss() -> None:
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.ones(1, 1, 4, 4)
    w = torch.zeros(1, 1, 4, 4)
    w[..., 0, 0] = 2.0
    assert float(WeightedHeatmapLoss()(pred, target, w)) == pytest.approx(1.0)
    assert float(WeightedHeatmapLoss("mean")(pred, target, w)) == pytest.approx(2.0 / 16)
    assert float(WeightedHeatmapLoss()(pred, target, torch.zeros_like(w))) == 0.0
    assert float(WeightedHeatmapLoss()(pred, target)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        WeightedHeatmapLoss("sum")


def test_memory_fifo_and_prototypes() -> None:
    mem = PrototypeMemory(dim=3, size=2)
    assert mem.prototype("tgt_fg") is None
    mem.push("tgt_fg", torch.tensor([1.0, 0, 0]))
    mem.push("tgt_fg", torch.tensor([[0.0, 1, 0], [0.0, 0, 1]]))  # overwrites the oldest
    assert int(mem.valid[0].sum()) == 2
    p = mem.prototype("tgt_fg")
    assert torch.allclose(p, F.normalize(torch.tensor([0.0, 1, 1]), dim=0))
    mem.push("tgt_bg", torch.tensor([1.0, 0, 0]))
    mem.push("bg_sub", torch.tensor([[1.0, 0, 0], [0.0, 1, 0]]))
    pos, neg = mem.positives_negatives(1)
    assert pos is not None and neg.shape == (3, 3)
    pos0, neg0 = mem.positives_negatives(0)
    assert torch.allclose(pos0, torch.tensor([1.0, 0, 0])) and neg0.shape == (1, 3)


def test_helpers() -> None:
    f = F.normalize(torch.randn(2, 4, 5, 5), dim=1)
    assert masked_mean(f, torch.zeros(2, 5, 5, dtype=torch.bool)) is None
    m = masked_mean(f, torch.ones(2, 5, 5, dtype=torch.bool))
    assert m.shape == (4,) and float(m.norm()) == pytest.approx(1.0, rel=1e-5)
    x = F.normalize(torch.cat([torch.randn(20, 3) * 0.05 + torch.tensor([3.0, 0, 0]),
                               torch.randn(20, 3) * 0.05 + torch.tensor([0, 3.0, 0])]), dim=1)
    torch.manual_seed(0)
    c = kmeans(x, 2, 10)
    assert c.shape == (2, 3) and sorted(c.argmax(1).tolist()) == [0, 1]
    cand = torch.zeros(10, dtype=torch.bool)
    cand[[1, 3, 5, 7]] = True
    conf = torch.arange(10).float()
    idx = sample_anchors(cand, conf, max_anchors=1, hard_fraction=0.5)
    assert idx[0] == 1 and len(idx) == 2 and set(idx.tolist()) <= {1, 3, 5, 7}


def test_contrastive_pulls_anchors_to_their_prototype() -> None:
    torch.manual_seed(0)
    loss_fn = ClassFocusedContrastiveLoss(dim=8, temperature=0.5, num_clusters=2)
    feats = torch.randn(2, 8, 6, 6, requires_grad=True)
    fg = torch.zeros(2, 6, 6, dtype=torch.bool)
    fg[:, :3] = True
    bg = ~fg
    f = loss_fn.normalize(feats)
    assert float(loss_fn(f, [bg, fg], [torch.rand(2, 6, 6)] * 2)) == 0.0  # empty memory: no loss
    loss_fn.update_memory(f, fg, bg, tgt_point=fg, src_features=f, src_fg=fg)
    loss = loss_fn(f, [bg, fg], [torch.rand(2, 6, 6)] * 2)
    assert loss > 0
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    # well-separated classes give a lower loss than mixed ones
    sep = torch.zeros(2, 8, 6, 6)
    sep[:, 0][fg] = 1.0
    sep[:, 1][bg] = 1.0
    sep = loss_fn.normalize(sep + 0.01 * torch.randn_like(sep))
    fresh = ClassFocusedContrastiveLoss(dim=8, num_clusters=2)
    fresh.update_memory(sep, fg, bg, fg, sep, fg)
    good = fresh(sep, [bg, fg], [torch.rand(2, 6, 6)] * 2)
    bad = fresh(loss_fn.normalize(torch.randn(2, 8, 6, 6)), [bg, fg], [torch.rand(2, 6, 6)] * 2)
    assert good < bad
