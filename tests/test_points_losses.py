"""CKS and detection losses on small hand-checked cases, and the paper's gradient split (Eq. 7-8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_ext.engines.cks import cks_step_losses
from monai_ext.losses.cks import (
    CKSLoss,
    border_loss,
    border_map,
    collapse_loss,
    consistency_loss_m,
    gaussian_prior,
    instance_consistency_loss,
    supervised_mask_loss,
)
from monai_ext.losses.detection import PointDetectionLoss, detection_targets
from monai_ext.networks.collaborator import Collaborator
from monai_ext.networks.lacss import LacssNet
from monai_ext.postprocess.points import crop_flat_index, gather_crops, paste_crops


def test_detection_targets_by_hand() -> None:
    pts = torch.tensor([[[9.0, 13.0], [-1.0, -1.0]]])
    valid = torch.tensor([[True, False]])
    score, off = detection_targets(pts, valid, stride=4, height=8, width=8, roi=4.0)
    # cell (gy, gx) has centre (4 gy + 1.5, 4 gx + 1.5); positives: centre closer than 4 px to (9, 13)
    expected = {(gy, gx) for gy in range(8) for gx in range(8)
                if math.hypot(4 * gy + 1.5 - 9, 4 * gx + 1.5 - 13) < 4}
    got = {tuple(map(int, t)) for t in torch.nonzero(score[0, 0]).tolist()}
    assert got == expected == {(2, 3), (1, 3), (2, 2)}
    assert off[0, :, 2, 3].tolist() == pytest.approx([(9 - 9.5) / 4, (13 - 13.5) / 4])
    # no points: all negative
    s0, _ = detection_targets(pts, torch.zeros_like(valid), 4, 8, 8)
    assert s0.sum() == 0


def test_detection_targets_nearest_point_wins() -> None:
    pts = torch.tensor([[[5.0, 5.0], [5.0, 12.0]]])
    score, off = detection_targets(pts, torch.ones(1, 2, dtype=torch.bool), 4, 8, 8, roi=8.0)
    # cell (1, 2) centre (5.5, 9.5): nearer to (5, 12) (2.55 px) than to (5, 5) (4.53 px)
    assert score[0, 0, 1, 2] == 1
    assert off[0, :, 1, 2].tolist() == pytest.approx([-0.5 / 4, 2.5 / 4])


def test_detection_loss_focal_and_offsets() -> None:
    loss = PointDetectionLoss(detection_roi=4.0)
    pts = torch.tensor([[[9.0, 13.0]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    tgt, off = detection_targets(pts, valid, 4, 8, 8, 4.0)
    good = (tgt * 40 - 20)  # confident and right
    f, o = loss([good], [off], [4], pts, valid)
    assert f < 1e-6 and o == 0
    bad = -good
    f2, o2 = loss([bad], [off + 1.0], [4], pts, valid)
    # focal: (1 - p_t)^2 * -log(p_t) with p_t = sigmoid(-20) for all 64 cells, / 64 cells
    pt = torch.sigmoid(torch.tensor(-20.0))
    assert f2 == pytest.approx(float((1 - pt) ** 2 * -torch.log(pt)), rel=1e-4)
    assert o2 == pytest.approx(1.0)  # L2: mean over (dy, dx) of 1^2, one positive
    hub = PointDetectionLoss(detection_roi=4.0, offset_loss="huber")
    _, o3 = hub([bad], [off + 3.0], [4], pts, valid)
    assert o3 == pytest.approx(2.5)  # Huber(3) = 3 - 0.5
    with pytest.raises(ValueError):
        PointDetectionLoss(offset_loss="l1")


def test_gaussian_prior_values() -> None:
    origin = torch.tensor([[0, 0]])
    loc = torch.tensor([[1.0, 2.0]])
    pr = gaussian_prior(origin, loc, torch.tensor([2.0]), 4)
    assert pr[0, 1, 2] == pytest.approx(1.0)
    assert pr[0, 3, 2] == pytest.approx(math.exp(-4 / 8))
    assert pr[0, 0, 0] == pytest.approx(math.exp(-(1 + 4) / 8))


def test_consistency_m_linear_and_ce() -> None:
    mp = torch.tensor([[[[0.9, 0.2], [0.5, 0.0]]]])
    fg = torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]]], requires_grad=True)
    mc = torch.sigmoid(fg).detach()
    expected = ((1 - mp) * mc + mp * (1 - mc)).mean()
    got = consistency_loss_m(mp, fg, "linear")
    assert float(got) == pytest.approx(float(expected))
    got.backward()
    # Eq. 7: dL/dM_c = (1 - 2 M_p) / (H W)
    dmc = (1 - 2 * mp) / 4
    assert torch.allclose(fg.grad, dmc * mc * (1 - mc))
    ce = consistency_loss_m(mp, fg.detach(), "ce")
    hard = (mp >= 0.5).float()
    assert ce == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(fg.detach(), hard)))


def _brute_ls(m: np.ndarray, mc_img: np.ndarray, origins: list[tuple[int, int]], s: int) -> float:
    """Eq. 8 by explicit loops over cells and pixels (the reference for the vectorised version)."""
    h, w = mc_img.shape
    n = len(origins)
    full = np.zeros((n, h, w))
    inside = np.zeros((n, s, s), bool)
    for i, (y0, x0) in enumerate(origins):
        for r in range(s):
            for c in range(s):
                if 0 <= y0 + r < h and 0 <= x0 + c < w:
                    full[i, y0 + r, x0 + c] = m[i, r, c]
                    inside[i, r, c] = True
    total = 0.0
    for i, (y0, x0) in enumerate(origins):
        for r in range(s):
            for c in range(s):
                mi = m[i, r, c]
                if inside[i, r, c]:
                    mcv = mc_img[y0 + r, x0 + c]
                    others = sum(full[j, y0 + r, x0 + c] for j in range(n) if j != i)
                    total += (1 - mcv) * mi + mcv * (1 - mi) + mi * others
                else:
                    total += mi  # outside the image: background
    return total / (n * s * s)


def test_instance_consistency_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    s, h, w = 4, 6, 7
    origins = [(0, 0), (2, 3), (-1, 4)]
    logits = torch.tensor(rng.normal(0, 2, (3, s, s)), dtype=torch.float32)
    mc_img = rng.random((h, w)).astype(np.float32)
    origin = torch.tensor(origins)
    batch = torch.zeros(3, dtype=torch.long)
    flat, valid = crop_flat_index(origin, batch, s, h, w)
    m = torch.sigmoid(logits)
    others = gather_crops(paste_crops(m, flat, valid, h * w), flat, valid) - m
    mc_crops = gather_crops(torch.tensor(mc_img).reshape(-1), flat, valid)
    got = instance_consistency_loss(logits, mc_crops, others, valid)
    assert float(got) == pytest.approx(_brute_ls(m.numpy(), mc_img, origins, s), rel=1e-5)


def test_border_map_and_loss() -> None:
    probs = torch.zeros(1, 6, 6)
    probs[0, :, 3:] = 1.0  # a vertical step edge between columns 2 and 3
    flat, valid = crop_flat_index(torch.tensor([[0, 0]]), torch.tensor([0]), 6, 6, 6)
    bp = border_map(probs, flat, valid, 36).view(6, 6)
    # Sobel of a unit step: |S_x| = 4 at the two columns next to the step -> clip(16/8, 1) = 1 -> tanh(1)
    assert bp[2, 2] == pytest.approx(math.tanh(1.0), rel=1e-5) and bp[2, 3] == pytest.approx(math.tanh(1.0), rel=1e-5)
    assert bp[2, 0] == pytest.approx(math.tanh(1e-4), abs=1e-4)  # flat region: sqrt(1e-8)
    edge = torch.zeros(1, 1, 6, 6)
    assert border_loss(bp, edge) == pytest.approx(float(((0.5 - bp) ** 2).mean()), rel=1e-6)


def test_collapse_loss_exponents() -> None:
    probs = torch.full((2, 4, 4), 0.25)
    assert collapse_loss(probs, delta=0.01, exponent=1.0, eps=0.0) == pytest.approx(0.04)
    assert collapse_loss(probs, delta=0.01, exponent=0.5, eps=0.0) == pytest.approx(0.02)
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[:, :2] = True  # half the window inside the image: mean 0.125
    assert collapse_loss(probs, delta=0.01, exponent=1.0, eps=0.0, valid=valid) == pytest.approx(0.08)
    assert collapse_loss(probs[:0]) == 0


def test_supervised_mask_loss() -> None:
    logits = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    assert supervised_mask_loss(logits, target, valid) == pytest.approx(math.log(2.0))


@pytest.fixture(scope="module")
def tiny_models() -> tuple[LacssNet, Collaborator, dict]:
    torch.manual_seed(0)
    net = LacssNet(fpn_channels=16, crop_size=32, detection_strides=(4, 8))
    col = Collaborator()
    batch = {
        "image": torch.randn(2, 1, 64, 64),
        "points": torch.tensor([[[20.0, 20.0], [40.0, 44.0], [-1, -1]], [[30.0, 10.0], [-1, -1], [-1, -1]]]),
        "points_valid": torch.tensor([[True, True, False], [True, False, False]]),
        "prior_d": torch.tensor([10.0, 15.0]),
    }
    return net, col, batch


def _grads(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("term, principal, collaborator", [
    ("loss_s", True, False),  # L_S trains the principal only
    ("loss_m", False, True),  # L_M trains the collaborator only
    ("loss_b", True, True),  # L_B trains both
    ("loss_mc", True, False),
])
def test_gradient_separation(tiny_models: tuple, term: str, principal: bool, collaborator: bool) -> None:
    net, col, batch = tiny_models
    net.zero_grad(set_to_none=True)
    col.zero_grad(set_to_none=True)
    out = net(batch["image"], batch["points"], batch["points_valid"])
    fg, edge = col(batch["image"])
    terms = CKSLoss(d=12.0)(out["instance_logits"], out["instance_origin"], out["instance_batch"],
                           out["instance_locations"], fg, edge)
    terms[term].backward()
    assert (_grads(net) > 0) == principal
    assert (_grads(col) > 0) == collaborator


def test_border_to_principal_off_trains_the_border_net_only(tiny_models: tuple) -> None:
    """``border_to_principal=False`` (CKSTrainer ``border_start_steps``): L_B keeps its value, reaches the border
    net and not the principal nor the foreground net."""
    net, col, batch = tiny_models
    net.zero_grad(set_to_none=True)
    col.zero_grad(set_to_none=True)
    out = net(batch["image"], batch["points"], batch["points_valid"])
    fg, edge = col(batch["image"])
    args = (out["instance_logits"], out["instance_origin"], out["instance_batch"], out["instance_locations"], fg, edge)
    on = CKSLoss(d=12.0)(*args)
    off = CKSLoss(d=12.0)(*args, border_to_principal=False)
    assert float(off["loss_b"]) == pytest.approx(float(on["loss_b"]))
    off["loss_b"].backward()
    assert _grads(net) == 0
    assert _grads(col.border) > 0
    assert _grads(col.foreground) == 0


def test_one_step_gives_the_papers_split(tiny_models: tuple) -> None:
    """d(total)/d(theta_p) = dL_pr/d(theta_p) and d(total)/d(theta_c) = dL_co/d(theta_c) (Eq. 7-8)."""
    net, col, batch = tiny_models
    net.eval()  # no drop-path randomness: the three passes see the same network
    det, cks = PointDetectionLoss(), CKSLoss(d=12.0)

    def grads(which: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        net.zero_grad(set_to_none=True)
        col.zero_grad(set_to_none=True)
        total, terms = cks_step_losses(net, col, batch, det, cks)
        loss = {"total": total,
                "pr": terms["loss_det_focal"] + terms["loss_det_offset"] + terms["loss_s"] + terms["loss_b"]
                + terms["loss_mc"],
                "co": terms["loss_m"] + terms["loss_b"]}[which]
        loss.backward()
        return ([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()],
                [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in col.parameters()])

    tp, tc = grads("total")
    pp, _ = grads("pr")
    _, cc = grads("co")
    net.train()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(tp, pp))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(tc, cc))
    assert sum(float(g.abs().sum()) for g in tc) > 0


def test_cks_loss_options(tiny_models: tuple) -> None:
    net, col, batch = tiny_models
    with torch.no_grad():
        out = net(batch["image"], batch["points"], batch["points_valid"])
        fg, edge = col(batch["image"])
    args = (out["instance_logits"], out["instance_origin"], out["instance_batch"], out["instance_locations"], fg, edge)
    base = CKSLoss()(*args)
    assert set(base) == {"loss_m", "loss_s", "loss_b", "loss_mc"}
    assert all(torch.isfinite(v) for v in base.values())
    no_prior = CKSLoss(pi=0.0)(*args)
    assert no_prior["loss_s"] == pytest.approx(float(base["loss_s"]))  # the prior only enters L_M
    assert no_prior["loss_m"] != pytest.approx(float(base["loss_m"]))
    for kw in ({"consistency_m": "ce"}, {"consistency_s": "ce"}, {"points_as_foreground": True},
               {"border_mask_covered": True}, {"prior_center": "window"}, {"collapse_exponent": 0.5}):
        vals = CKSLoss(**kw)(*args)
        assert all(torch.isfinite(v) for v in vals.values()), kw
    warm = CKSLoss()(*args, warmup=True)
    assert all(torch.isfinite(v) for v in warm.values())
    per_cell = CKSLoss()(*args, prior_d=torch.tensor([5.0, 5.0, 50.0]))
    assert per_cell["loss_m"] != pytest.approx(float(base["loss_m"]))
    with pytest.raises(ValueError):
        CKSLoss(consistency_m="l1")
