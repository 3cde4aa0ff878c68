"""LACSS principal and CKS collaborator: shapes, batched per-cell head == one cell at a time, TorchScript, weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from monai_ext.networks.collaborator import Collaborator
from monai_ext.networks.lacss import LacssInference, LacssNet, as_predictor

SMALL = {"fpn_channels": 16, "crop_size": 32}


@pytest.fixture(scope="module")
def net() -> LacssNet:
    torch.manual_seed(0)
    return LacssNet(**SMALL).eval()


def test_training_outputs(net: LacssNet) -> None:
    x = torch.randn(2, 1, 70, 90)  # padded internally to 96 x 96
    pts = torch.tensor([[[10.0, 20.0], [60.0, 85.0], [-1, -1]], [[35.0, 45.0], [-1, -1], [-1, -1]]])
    out = net(x, pts)
    assert [t.shape[-2:] for t in out["det_logits"]] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert out["det_strides"] == [4, 8, 16, 32] and out["image_size"] == (96, 96)
    assert out["instance_logits"].shape == (3, 32, 32)
    assert out["instance_batch"].tolist() == [0, 0, 1] and out["instance_index"].tolist() == [0, 1, 0]
    # the window is centred on the stride-4 cell of the point
    assert out["instance_origin"].tolist() == [[-8, 4], [44, 68], [16, 28]]


def test_batched_head_equals_one_cell_at_a_time(net: LacssNet) -> None:
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        fpn = net._features(net._pad(x))
        feat = net.segmentor.feature_map(fpn[0])
        locs = torch.tensor([[5.0, 7.0], [30.5, 31.2], [63.0, 1.0], [40.0, 40.0]])
        batch = torch.zeros(4, dtype=torch.long)
        all_at_once, origin = net.segmentor(feat, fpn[0], locs, batch)
        singles = [net.segmentor(feat, fpn[0], locs[i : i + 1], batch[:1])[0] for i in range(4)]
    assert torch.allclose(all_at_once, torch.cat(singles), atol=1e-5)


def _explicit_head(seg, fpn4: torch.Tensor, y: int, x: int) -> torch.Tensor:
    """Mask logits of one cell at pixel ``(y, x)`` by the paper's Fig. 3: conv1x1(concat(features, resized
    encoding)) (``"add"``: features + linear(encoding)), ReLU, 2x2 transposed conv, bilinear resize."""
    feat = seg.features(fpn4)
    loc = torch.tensor([[float(y), float(x)]])
    p = seg.patch
    cy, cx = y // 4 - p // 2, x // 4 - p // 2
    padded = F.pad(feat, [p, p, p, p])
    patch = padded[:, :, cy + p : cy + 2 * p, cx + p : cx + 2 * p]
    enc = seg.encoder(seg._bilinear(fpn4, loc, torch.zeros(1, dtype=torch.long))).view(1, *seg.enc_shape)
    enc = F.interpolate(enc, size=(p, p), mode="bilinear", align_corners=False)
    if seg.merge == "concat":
        w = torch.cat([seg.fuse_feat.weight[:, :, 0, 0], seg.fuse_enc.weight], 1)  # (C, C + 4)
        fused = F.relu(torch.einsum("oc,bchw->bohw", w, torch.cat([patch, enc], 1))
                       + seg.fuse_feat.bias[None, :, None, None])
    else:
        fused = F.relu(patch + torch.einsum("oc,bchw->bohw", seg.fuse_enc.weight, enc)
                       + seg.fuse_enc.bias[None, :, None, None])
    ref = torch.einsum("oc,bchw->bohw", seg.out.weight, fused) + seg.out.bias[None, :, None, None]
    ref = ref.view(1, 2, 2, p, p).permute(0, 3, 1, 4, 2).reshape(1, 1, 2 * p, 2 * p)
    return F.interpolate(ref, size=(seg.crop_size,) * 2, mode="bilinear", align_corners=False)[:, 0]


def test_concat_fusion_equals_explicit_concatenation(net: LacssNet) -> None:
    """The folded 1x1 fusion equals conv1x1(concat(features, resized encoding)) of the paper's Fig. 3."""
    seg = net.segmentor
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        fpn4 = net._features(x)[0]
        ref = _explicit_head(seg, fpn4, 30, 33)
        got, _ = seg(seg.feature_map(fpn4), fpn4, torch.tensor([[30.0, 33.0]]), torch.zeros(1, dtype=torch.long))
    assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("merge", ["concat", "add"])
def test_head_gradients_equal_explicit_formulation(merge: str) -> None:
    """The in-place per-cell chain (gather, fused add, ReLU) back-propagates exactly like the explicit head."""
    torch.manual_seed(1)
    seg = LacssNet(**SMALL, encoding_merge=merge).segmentor.train()
    fpn4 = torch.randn(1, 16, 16, 16, requires_grad=True)
    got, _ = seg(seg.feature_map(fpn4), fpn4, torch.tensor([[30.0, 33.0]]), torch.zeros(1, dtype=torch.long))
    weights = torch.randn_like(got)
    params = [fpn4, seg.fuse_enc.weight, seg.out.weight, seg.out.bias, seg.encoder[0].weight]
    g_got = torch.autograd.grad((got * weights).sum(), params)
    ref = _explicit_head(seg, fpn4, 30, 33)
    assert torch.allclose(got, ref, atol=1e-5)
    g_ref = torch.autograd.grad((ref * weights).sum(), params)
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_predict_shapes_and_torchscript(tmp_path: Path) -> None:
    torch.manual_seed(0)
    inf = LacssInference(**SMALL, score_threshold=0.0, max_detections=50).eval()
    x = torch.randn(2, 1, 50, 70)
    with torch.no_grad():
        y = inf(x)
    assert y.shape == (2, 2, 50, 70)
    ids = y[:, 0]
    assert ids.max() > 0 and ids.max() <= 50 and (y[:, 1][ids > 0] > 0).all() and (y[:, 1][ids == 0] == 0).all()
    scripted = torch.jit.script(inf)
    with torch.no_grad():
        assert torch.equal(scripted(x), y)
    scripted.save(str(tmp_path / "model.ts"))
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    # same weights as the training network; the predictor view gives the same result
    train_net = LacssNet(**SMALL, score_threshold=0.0, max_detections=50)
    train_net.load_state_dict(inf.state_dict())
    with torch.no_grad():
        assert torch.equal(as_predictor(train_net.eval())(x), y)
    # the cell chunk (automatic: cache-sized on a CPU) bounds memory and speed only, never the result
    assert inf.instance_chunk == 0
    for chunk in (1, 7, 512):
        other = LacssInference(**SMALL, score_threshold=0.0, max_detections=50, instance_chunk=chunk).eval()
        other.load_state_dict(inf.state_dict())
        with torch.no_grad():
            assert torch.equal(other(x), y)


def test_untrained_network_detects_nothing() -> None:
    torch.manual_seed(0)
    y = LacssInference(**SMALL).eval()(torch.randn(1, 1, 64, 64))
    assert y.abs().sum() == 0  # score prior 0.01 < 0.5


def test_options_and_errors() -> None:
    n = LacssNet(**SMALL, detection_strides=(8, 16), encoding_merge="add")
    out = n(torch.randn(1, 1, 64, 64), torch.tensor([[[10.0, 10.0]]]))
    assert len(out["det_logits"]) == 2 and out["instance_logits"].shape == (1, 32, 32)
    with pytest.raises(ValueError):
        LacssNet(**SMALL, detection_strides=(2,))
    with pytest.raises(ValueError):
        LacssNet(fpn_channels=16, crop_size=30)
    with pytest.raises(ValueError):
        LacssNet(**SMALL, encoding_merge="mul")


def test_proposal_swap_moves_points_to_detections() -> None:
    torch.manual_seed(0)
    n = LacssNet(**SMALL, proposal_swap_distance=12.0, score_threshold=0.0).eval()
    pts = torch.tensor([[[20.0, 20.0]]])
    with torch.no_grad():
        out = n(torch.randn(1, 1, 64, 64), pts)
    moved = out["instance_locations"][0]
    assert float((moved - pts[0, 0]).norm()) < 12.0


def test_backbone_checkpoint_is_loaded(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    ref = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "atto.pth"
    torch.save(ref.state_dict(), path)
    n = LacssNet(in_channels=3, fpn_channels=16, crop_size=32, backbone_checkpoint=str(path))
    got = dict(n.encoder.body.named_parameters())
    assert torch.equal(got["stages_1.blocks.0.conv_dw.weight"], ref.stages[1].blocks[0].conv_dw.weight)


def test_collaborator() -> None:
    col = Collaborator(in_channels=2)
    fg, edge = col(torch.randn(2, 2, 37, 45))
    assert fg.shape == edge.shape == (2, 1, 37, 45)
    assert [m.out_channels for m in col.foreground.modules() if isinstance(m, torch.nn.Conv2d)][:4] == [16, 16, 32, 32]
    convs = [m for m in col.border.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 1]  # paper net b1: three conv layers
    multi = Collaborator(num_classes=3)
    fg, _ = multi(torch.randn(2, 1, 16, 16), torch.tensor([2, 0]))
    assert fg.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError):
        multi(torch.randn(1, 1, 16, 16))
