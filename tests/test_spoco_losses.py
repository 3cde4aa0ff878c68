"""SPOCO losses: exact values against a direct (looped) transcription of the formulas, weights honoured, PU label
convention, kernel calibration, chunking, gradients, WGAN shape critic."""

from __future__ import annotations

import math

import pytest
import torch

from monai_ext.losses.spoco import TERM_NAMES, DiscriminativeLoss, SpocoLoss, gaussian_kernel, kernel_sigma2


def _reference_terms(emb: torch.Tensor, lab: torch.Tensor, dv: float, dd: float, t: float) -> dict[str, float]:
    """Literal, looped transcription of the module docstring for one image (E, H, W), labels (H, W)."""
    E = emb.shape[0]
    e = emb.reshape(E, -1).t().double()
    lab = lab.reshape(-1)
    ids = [int(i) for i in torch.unique(lab) if i > 0]
    C = len(ids)
    two_s2 = dv * dv / -math.log(t)
    mus = [e[lab == i].mean(0) for i in ids]
    pull = sum(((torch.norm(e[lab == i] - mu, dim=1) - dv).clamp_min(0) ** 2).mean() for i, mu in zip(ids, mus)) / C
    push = 0.0
    for a in range(C):
        for b in range(C):
            if a != b:
                push += float((2 * dd - torch.norm(mus[a] - mus[b])).clamp_min(0) ** 2)
    push = push / (C * (C - 1)) if C > 1 else 0.0
    reg = sum(float(torch.norm(mu)) for mu in mus) / C
    unl = e[lab == 0]
    upush = sum(float(((dd - torch.norm(unl - mu, dim=1)).clamp_min(0) ** 2).sum()) / len(unl) for mu in mus) / C
    dice = []
    for i, mu in zip(ids, mus):
        s = torch.exp(-((e - mu) ** 2).sum(1) / two_s2)
        m = (lab == i).double()
        dice.append(float(2 * (s * m).sum() / ((s * s).sum() + (m * m).sum())))
    obj = 1 - sum(dice) / C
    return {"pull": float(pull), "push": push, "reg": reg, "unlabeled_push": upush, "object": obj}


def _example(seed: int = 0, b: int = 2, e_dim: int = 4, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, e_dim, size, size, generator=g)
    lab = torch.zeros(b, 1, size, size, dtype=torch.long)
    lab[:, :, 1:5, 1:6] = 3
    lab[:, :, 6:10, 2:4] = 7
    lab[0, :, 8:11, 7:11] = 2
    return emb, lab


def test_terms_match_reference_formulas() -> None:
    emb, lab = _example()
    loss = SpocoLoss(delta_v=0.5, delta_d=1.5, consistency_weight=0.0)
    got = loss.terms(emb, lab)
    ref = [_reference_terms(emb[i], lab[i, 0], 0.5, 1.5, 0.5) for i in range(2)]
    for k in ("pull", "push", "reg", "unlabeled_push", "object"):
        assert float(got[k]) == pytest.approx((ref[0][k] + ref[1][k]) / 2, rel=1e-4, abs=1e-6), k


def test_chunked_equals_unchunked_values_and_gradients() -> None:
    emb, lab = _example(1)
    teacher = emb + 0.05 * torch.randn_like(emb)
    outs = []
    for max_elements in (1 << 24, 37):
        e = emb.clone().requires_grad_(True)
        loss = SpocoLoss(delta_d=1.5, seed=3, max_elements=max_elements)
        total = loss(e, lab, teacher)
        total.backward()
        outs.append((float(total.detach()), e.grad.clone()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-6)


def test_kernel_is_threshold_at_delta_v() -> None:
    for dv, t in ((0.5, 0.5), (1.0, 0.9), (0.3, 0.1)):
        s2 = kernel_sigma2(dv, t)
        assert float(gaussian_kernel(torch.tensor(dv * dv), s2)) == pytest.approx(t)
    assert kernel_sigma2(0.5, 0.5) / 2 == pytest.approx(0.42 ** 2, rel=0.03)  # sigma ~ 0.42 as in the paper
    with pytest.raises(ValueError):
        kernel_sigma2(0.5, 1.0)


@pytest.mark.parametrize("name", TERM_NAMES)
def test_each_weight_is_honoured(name: str) -> None:
    """Weight 0 removes the term from the total, doubling it adds the term once more (no 'weight + term')."""
    emb, lab = _example(2)
    emb = emb.double()
    teacher = emb + 0.3 * torch.randn_like(emb)
    arg = {"pull": "alpha", "push": "beta", "reg": "gamma", "unlabeled_push": "unlabeled_push_weight",
           "object": "instance_weight", "consistency": "consistency_weight"}[name]
    base = {"delta_d": 1.5, "seed": 5}
    t1 = SpocoLoss(**base).terms(emb, lab, teacher)
    assert float(t1[name]) > 0, f"{name} must be active in this example"
    full = float(SpocoLoss(**base)(emb, lab, teacher))
    w1 = SpocoLoss(**base).weights[name]
    without = float(SpocoLoss(**base, **{arg: 0.0})(emb, lab, teacher))
    doubled = float(SpocoLoss(**base, **{arg: 2.0 * w1})(emb, lab, teacher))
    assert full - without == pytest.approx(w1 * float(t1[name]), rel=1e-4, abs=1e-7)
    assert doubled - full == pytest.approx(w1 * float(t1[name]), rel=1e-4, abs=1e-7)


def test_zero_weight_term_is_not_computed_and_teacher_not_needed() -> None:
    emb, lab = _example()
    loss = SpocoLoss(consistency_weight=0.0, instance_weight=0.0)
    assert not loss.needs_teacher
    terms = loss.terms(emb, lab)  # no teacher given: fine
    assert float(terms["consistency"]) == 0.0 and float(terms["object"]) == 0.0
    with pytest.raises(ValueError, match="teacher"):
        SpocoLoss().terms(emb, lab)


def test_label_zero_is_unlabelled_not_an_instance() -> None:
    """Pixels labelled 0 never enter pull / push / object Dice; they are only pushed (and used for consistency)."""
    emb, lab = _example()
    loss = SpocoLoss(unlabeled_push_weight=0.0, consistency_weight=0.0)
    base = loss.terms(emb, lab)
    emb2 = emb.clone()
    emb2[lab.expand_as(emb) == 0] += 100.0  # move every unlabelled pixel far away
    moved = loss.terms(emb2, lab)
    for k in ("pull", "push", "reg"):
        assert float(moved[k]) == pytest.approx(float(base[k]), rel=1e-5)
    # the unlabelled push vanishes once unlabelled pixels are farther than delta_d from every instance mean
    assert float(SpocoLoss(consistency_weight=0.0).terms(emb2, lab)["unlabeled_push"]) == 0.0


def test_negative_labels_are_ignored_everywhere() -> None:
    emb, lab = _example()
    lab_ign = lab.clone()
    lab_ign[:, :, 0, :] = -1
    emb2 = emb.clone()
    emb2[:, :, 0, :] = 1e3
    loss = SpocoLoss(seed=0)
    a = loss.terms(emb, lab_ign, emb)
    b = SpocoLoss(seed=0).terms(emb2, lab_ign, emb2)
    for k in ("pull", "push", "reg", "unlabeled_push"):
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-5)


def test_push_normalisation_and_single_instance() -> None:
    emb, lab = _example()
    pairs = float(SpocoLoss(delta_d=1.5, consistency_weight=0).terms(emb[:1], lab[:1])["push"])
    squared = float(SpocoLoss(delta_d=1.5, consistency_weight=0, push_normalization="squared").terms(
        emb[:1], lab[:1])["push"])
    assert squared == pytest.approx(pairs * (3 * 2) / 9)  # C = 3 in image 0
    one = lab.clone()
    one[one != 3] = 0
    assert float(SpocoLoss(consistency_weight=0).terms(emb, one)["push"]) == 0.0


def test_perfect_embeddings_have_zero_loss() -> None:
    lab = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    lab[..., :5, :5] = 1
    lab[..., 5:, 5:] = 2
    centres = torch.tensor([[0.0, 0.0], [0.0, 5.0], [5.0, 0.0]])  # unlabelled, 1, 2: all > 2 delta_d apart
    emb = centres[lab[0, 0]].permute(2, 0, 1)[None]
    loss = SpocoLoss(delta_d=2.0, gamma=0.0, instance_weight=0.0, consistency_weight=0.0)
    assert float(loss(emb, lab)) == pytest.approx(0.0, abs=1e-6)
    # the object Dice is small (not 0: the kernel is soft) and its gradient is finite
    e = emb.clone().requires_grad_(True)
    obj = SpocoLoss(instance_weight=1.0, alpha=0, beta=0, gamma=0, unlabeled_push_weight=0, consistency_weight=0)
    val = obj(e, lab)
    val.backward()
    assert float(val.detach()) < 0.05 and torch.isfinite(e.grad).all()


def test_consistency_identical_views_is_zero_and_no_teacher_gradient() -> None:
    emb, lab = _example(4)
    loss = SpocoLoss(alpha=0, beta=0, gamma=0, unlabeled_push_weight=0, instance_weight=0, seed=1)
    assert float(loss(emb, lab, emb.clone())) == pytest.approx(0.0, abs=1e-6)
    e = emb.clone().requires_grad_(True)
    g = (emb + 0.5 * torch.randn_like(emb)).requires_grad_(True)
    val = SpocoLoss(alpha=0, beta=0, gamma=0, unlabeled_push_weight=0, instance_weight=0, seed=1)(e, lab, g)
    val.backward()
    assert float(val.detach()) > 0 and e.grad.abs().sum() > 0 and g.grad is None


def test_consistency_skipped_for_fully_labelled_images_and_seeded() -> None:
    emb, lab = _example()
    full = torch.ones_like(lab)
    loss = SpocoLoss(seed=0)
    assert float(loss.terms(emb, full, emb + 1)["consistency"]) == 0.0
    t = emb + 0.3 * torch.randn_like(emb)
    a = float(SpocoLoss(seed=7).terms(emb, lab, t)["consistency"])
    b = float(SpocoLoss(seed=7).terms(emb, lab, t)["consistency"])
    assert a == b
    # the generator state travels with the state dict
    l1 = SpocoLoss(seed=7)
    l1.terms(emb, lab, t)
    l2 = SpocoLoss(seed=99)
    l2.load_state_dict(l1.state_dict())
    assert float(l1.terms(emb, lab, t)["consistency"]) == float(l2.terms(emb, lab, t)["consistency"])


def test_consistency_reduction_sum_scales_with_batch() -> None:
    emb, lab = _example(b=2)
    t = emb + 0.3 * torch.randn_like(emb)
    mean = float(SpocoLoss(seed=2).terms(emb, lab, t)["consistency"])
    summ = float(SpocoLoss(seed=2, consistency_reduction="sum").terms(emb, lab, t)["consistency"])
    assert summ == pytest.approx(2 * mean, rel=0.5)  # per-image values differ, the sum is about twice the mean


def test_stable_anchor_and_3d() -> None:
    emb = torch.randn(1, 3, 4, 6, 6)
    lab = torch.zeros(1, 1, 4, 6, 6, dtype=torch.long)
    lab[..., :2, :3, :3] = 1
    lab[..., 2:, 3:, 3:] = 2
    for anchor in ("mean", "stable"):
        terms = SpocoLoss(anchor=anchor, seed=0).terms(emb, lab, emb * 0.9)
        assert all(torch.isfinite(v) for v in terms.values())


def test_empty_label_gives_zero_with_graph() -> None:
    emb = torch.randn(2, 4, 8, 8, requires_grad=True)
    lab = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    val = SpocoLoss(consistency_weight=0.0)(emb, lab)
    val.backward()
    assert float(val.detach()) == 0.0 and emb.grad is not None


def test_discriminative_baseline_has_only_three_terms() -> None:
    emb, lab = _example()
    d = DiscriminativeLoss(delta_d=1.5)
    assert d.weights["unlabeled_push"] == d.weights["object"] == d.weights["consistency"] == 0.0
    terms = d.terms(emb, lab)
    assert float(d.combine(terms)) == pytest.approx(float(terms["pull"] + terms["push"] + 0.001 * terms["reg"]),
                                                    rel=1e-6)


def test_bad_inputs_raise() -> None:
    emb, lab = _example()
    with pytest.raises(ValueError, match="does not match"):
        SpocoLoss()(emb, lab[..., :5], emb)
    with pytest.raises(ValueError, match="integer"):
        SpocoLoss(consistency_weight=0)(emb, lab.float() + 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        SpocoLoss(alpha=-1.0)
    with pytest.raises(ValueError):
        SpocoLoss(anchor="median")


def test_pooled_dice_reduction_matches_code_formula() -> None:
    emb, lab = _example(3)
    e = emb[0].reshape(4, -1).t().double()
    l = lab[0, 0].reshape(-1)
    two_s2 = kernel_sigma2(0.5, 0.5)
    inter = denom = 0.0
    for i in (2, 3, 7):
        mu = e[l == i].mean(0)
        s = torch.exp(-((e - mu) ** 2).sum(1) / two_s2)
        m = (l == i).double()
        inter += float((s * m).sum())
        denom += float((s * s).sum() + (m * m).sum())
    got = SpocoLoss(consistency_weight=0, dice_reduction="pooled").terms(emb[:1].double(), lab[:1])["object"]
    assert float(got) == pytest.approx(1 - 2 * inter / denom, rel=1e-6)
    with pytest.raises(ValueError):
        SpocoLoss(dice_reduction="median")
