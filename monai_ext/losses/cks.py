# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Collaborative knowledge sharing (CKS) losses (Yu 2023, Sec. III-C to III-E), in the paper's symbols.

Principal outputs: cell masks ``m_i`` (logits ``l(m_i)``) on ``S x S`` windows around the cell locations
``(y_i, x_i)``; collaborator outputs: foreground ``M_c`` and border ``B_c`` probability maps of the whole image.

- Eq. 4, image-level principal mask with the Gaussian size prior::

      M_p = max_i sigma[ l(m_i) + pi * l_prior(d, y_i, x_i) ],  l_prior = exp(-r^2 / (2 d^2)),
      r = distance to the cell location; pixels outside every window: M_p = 0.

- Eq. 6, linear consistency, trains the collaborator only (``M_p`` is a constant)::

      L_M = 1 / (H W) * sum_pixels[ (1 - M_p) M_c + M_p (1 - M_c) ]

  ablation (Eq. 5, Table V): cross-entropy against the hard label ``1[M_p >= 0.5]``.
- Eq. 8, instance consistency + overlap penalty, trains the principal only (``M_c`` is a constant)::

      L_S = 1 / K * { sum_i sum_pixels[ (1 - M_c) m_i + M_c (1 - m_i) ] + sum_i m_i * sum_{j != i} m_j },
      K = n * S^2

  ablation: cross-entropy of ``m_i`` against ``1[M_c >= 0.5]`` (overlap term kept).
- Eq. 9-10, borders, trains both models::

      B_p = tanh( sum_i phi(m_i) ),  phi = Sobel magnitude  sqrt(clip((S_y^2 + S_x^2) / 8, 1e-8, 1)),
      L_B = mean_pixels (B_c - B_p)^2

- collapse penalty (principal)::

      L_MC = delta / n * sum_i (mean(m_i))^(-e),   e = 1 (paper) or 1/2 (released code)

- fully supervised upper bound: per-window BCE of ``m_i`` against the ground-truth instance, averaged per cell.

The total ``L_det + L_S + L_B + L_MC + L_M`` has, thanks to the two stop-gradients, exactly the paper's split
(Eq. 7-8): its gradient w.r.t. the principal is that of ``L_pr = L_det + L_S + L_B + L_MC`` and w.r.t. the
collaborator that of ``L_co = L_M + L_B``; one backward pass and one optimizer update both models.

Released-code-only behaviour, as options (paper defaults): ``warmup`` (hard labels in ``L_S``, a
``-log(1 - m_j)`` overlap term and a broad prior ``(pi, d) = (1, 100)`` in ``L_M``), ``points_as_foreground``
(``M_p = 1`` at the rounded points), ``collapse_exponent`` 1/2, ``border_mask_covered`` (``L_B`` only where some
window lies, later code) and the prior centred on the window centre instead of the point (``prior_center``).
Not in the paper nor the code: ``forward(..., border_to_principal=False)`` makes ``B_p`` a constant in ``L_B`` (only the
border net learns), used by the trainer's ``border_start_steps`` for short schedules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_ext.postprocess.points import crop_flat_index, gather_crops, paste_crops

__all__ = [
    "gaussian_prior",
    "principal_foreground_logit",
    "consistency_loss_m",
    "instance_consistency_loss",
    "border_map",
    "border_loss",
    "collapse_loss",
    "supervised_mask_loss",
    "CKSLoss",
]

_NEG = -1.0e4  # "no window here" logit: sigmoid = 0


def gaussian_prior(origin: torch.Tensor, locations: torch.Tensor, d: torch.Tensor, crop_size: int) -> torch.Tensor:
    """``l_prior(d, y_i, x_i) = exp(-r^2 / (2 d^2))`` on every window pixel: ``(M, S, S)``.

    Args:
        origin: ``(M, 2)`` window origins; ``locations``: ``(M, 2)`` prior centres; ``d``: ``(M,)`` sizes.
    """
    r = torch.arange(crop_size, device=origin.device, dtype=locations.dtype)
    yy = origin[:, 0:1].to(locations.dtype) + r[None]
    xx = origin[:, 1:2].to(locations.dtype) + r[None]
    dy2 = (yy - locations[:, 0:1]).pow(2)
    dx2 = (xx - locations[:, 1:2]).pow(2)
    r2 = dy2[:, :, None] + dx2[:, None, :]
    return torch.exp(-r2 / (2.0 * d.to(locations.dtype).pow(2))[:, None, None])


def principal_foreground_logit(logits: torch.Tensor, prior: torch.Tensor, pi: float, flat: torch.Tensor,
                               valid: torch.Tensor, size: int) -> torch.Tensor:
    """Eq. 4 before the sigmoid: ``max_i [l(m_i) + pi l_prior]`` over a flat ``(B H W)`` buffer (detached)."""
    z = logits.detach() + pi * prior
    return paste_crops(z, flat, valid, size, reduce="amax", fill=_NEG)


def consistency_loss_m(mp: torch.Tensor, fg_logit: torch.Tensor, mode: str = "linear") -> torch.Tensor:
    """``L_M`` (Eq. 6), or its cross-entropy ablation (Eq. 5) with ``mode="ce"``. ``mp`` is treated as constant."""
    mp = mp.detach()
    if mode == "linear":
        mc = torch.sigmoid(fg_logit)
        return ((1.0 - mp) * mc + mp * (1.0 - mc)).mean()
    if mode == "ce":
        return F.binary_cross_entropy_with_logits(fg_logit, (mp >= 0.5).to(fg_logit.dtype))
    raise ValueError(f"consistency mode must be 'linear' or 'ce', got {mode!r}")


def instance_consistency_loss(logits: torch.Tensor, mc_crops: torch.Tensor, others: torch.Tensor,
                              valid: torch.Tensor, mode: str = "linear", warmup: bool = False,
                              others_log: torch.Tensor | None = None) -> torch.Tensor:
    """``L_S`` (Eq. 8) from per-window tensors ``(M, S, S)``.

    Args:
        logits: ``l(m_i)``.
        mc_crops: ``M_c`` read on each window (constant).
        others: ``sum_{j != i} m_j`` on each window.
        valid: in-image window pixels. Out-of-image pixels count as background (``M_c = 0`` there, no overlap
            term), like the zero-padded image margin of the released code; otherwise a mask could satisfy
            ``L_MC`` by switching on outside the image. ``K = n S^2``.
        mode: ``"linear"`` (paper) or ``"ce"`` (Table V ablation).
        warmup: released-code warm-up: hard ``1[M_c > 0.5]`` target and overlap ``m_i sum_{j!=i} -log(1 - m_j)``
            (``others_log``).
    """
    n, s, _ = logits.shape
    if n == 0:
        return logits.sum() * 0.0
    m = torch.sigmoid(logits)
    mc = mc_crops.detach()
    if warmup:
        mc = (mc > 0.5).to(m.dtype)
    if mode not in ("linear", "ce"):
        raise ValueError(f"consistency mode must be 'linear' or 'ce', got {mode!r}")
    vf = valid.to(m.dtype)
    mc = mc * vf
    if mode == "linear":
        fit = (1.0 - mc) * m + mc * (1.0 - m)
    else:
        fit = F.binary_cross_entropy_with_logits(logits, (mc >= 0.5).to(logits.dtype), reduction="none")
    overlap = m * (others_log if (warmup and others_log is not None) else others)
    per_pixel = fit + overlap * vf
    return per_pixel.sum() / float(n * s * s)


class _Sobel(nn.Module):
    """Sobel gradient magnitude ``phi(m)`` of ``(M, S, S)`` probabilities, zero padding (as LACSS).

    Separable differences on slices instead of a 2-channel convolution: same values, much cheaper backward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.pad(x, (1, 1, 1, 1))
        dx = p[:, :, 2:] - p[:, :, :-2]  # (M, S + 2, S)
        sx = dx[:, :-2] + 2.0 * dx[:, 1:-1] + dx[:, 2:]
        dy = p[:, 2:, :] - p[:, :-2, :]  # (M, S, S + 2)
        sy = dy[:, :, :-2] + 2.0 * dy[:, :, 1:-1] + dy[:, :, 2:]
        mag = (sx * sx + sy * sy) / 8.0
        return torch.sqrt(mag.clamp(1e-8, 1.0))


def border_map(probs: torch.Tensor, flat: torch.Tensor, valid: torch.Tensor, size: int,
               sobel: nn.Module | None = None) -> torch.Tensor:
    """``B_p = tanh(sum_i phi(m_i))`` (Eq. 9) on a flat ``(B H W)`` buffer (differentiable)."""
    sobel = sobel or _Sobel().to(probs.device)
    return torch.tanh(paste_crops(sobel(probs), flat, valid, size, reduce="sum"))


def border_loss(bp: torch.Tensor, edge_logit: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``L_B = mean (B_c - B_p)^2`` (Eq. 10); both arguments carry gradients. ``mask``: pixels that count."""
    err = (torch.sigmoid(edge_logit).reshape(-1) - bp.reshape(-1)) ** 2
    if mask is None:
        return err.mean()
    mask = mask.reshape(-1).to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def collapse_loss(probs: torch.Tensor, delta: float = 1e-3, exponent: float = 1.0, eps: float = 1e-4,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """``L_MC = delta / n * sum_i mean(m_i)^(-exponent)`` (0 when there is no cell); the mean is over the window,
    out-of-image pixels (``valid`` False) counting as 0."""
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    if valid is not None:
        probs = probs * valid.to(probs.dtype)
    mean = probs.flatten(1).mean(1)
    return delta * (mean + eps).pow(-exponent).mean()


def supervised_mask_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fully supervised mask loss: BCE of each window against its ground-truth instance, averaged per cell."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    v = valid.to(bce.dtype)
    return ((bce * v).flatten(1).sum(1) / v.flatten(1).sum(1).clamp(min=1.0)).mean()


class CKSLoss(nn.Module):
    """All CKS terms of one batch (see the module docstring); ``forward`` returns a dict of scalar tensors.

    Args:
        pi: prior confidence (2.0 in the paper; 0 disables the prior: Table VI "not used").
        d: default prior size ``d`` in pixels (20 for A431; per-image values override it, e.g. per cell line).
        consistency_m: ``"linear"`` (Eq. 6) or ``"ce"`` (Eq. 5) for ``L_M``.
        consistency_s: ``"linear"`` or ``"ce"`` for ``L_S``.
        collapse_delta, collapse_exponent: ``L_MC`` scale and exponent (paper exponent 1; code 1/2 with 0.01).
        points_as_foreground: set ``M_p = 1`` at the rounded cell locations (code-only; off).
        border_mask_covered: restrict ``L_B`` to pixels inside some window (later code; off).
        prior_center: ``"point"`` (paper: the cell location) or ``"window"`` (code: the window centre).
        warmup_pi, warmup_d: the prior used in ``L_M`` during warm-up (code: 1 and 100).
    """

    def __init__(self, pi: float = 2.0, d: float = 20.0, consistency_m: str = "linear",
                 consistency_s: str = "linear", collapse_delta: float = 1e-3, collapse_exponent: float = 1.0,
                 points_as_foreground: bool = False, border_mask_covered: bool = False, prior_center: str = "point",
                 warmup_pi: float = 1.0, warmup_d: float = 100.0) -> None:
        super().__init__()
        for name, v in (("consistency_m", consistency_m), ("consistency_s", consistency_s)):
            if v not in ("linear", "ce"):
                raise ValueError(f"{name} must be 'linear' or 'ce', got {v!r}")
        if prior_center not in ("point", "window"):
            raise ValueError(f"prior_center must be 'point' or 'window', got {prior_center!r}")
        self.pi = float(pi)
        self.d = float(d)
        self.consistency_m = consistency_m
        self.consistency_s = consistency_s
        self.collapse_delta = float(collapse_delta)
        self.collapse_exponent = float(collapse_exponent)
        self.points_as_foreground = bool(points_as_foreground)
        self.border_mask_covered = bool(border_mask_covered)
        self.prior_center = prior_center
        self.warmup_pi = float(warmup_pi)
        self.warmup_d = float(warmup_d)
        self.sobel = _Sobel()

    def forward(self, instance_logits: torch.Tensor, instance_origin: torch.Tensor, instance_batch: torch.Tensor,
                instance_locations: torch.Tensor, fg_logit: torch.Tensor, edge_logit: torch.Tensor,
                prior_d: torch.Tensor | None = None, warmup: bool = False,
                border_to_principal: bool = True) -> dict[str, torch.Tensor]:
        """Args:
            instance_logits ... instance_locations: the principal's per-cell outputs (:class:`LacssNet`).
            fg_logit, edge_logit: ``(B, 1, H, W)`` collaborator logits (``H, W``: the image size).
            prior_d: ``(M,)`` per-cell ``d`` (``None``: the default ``d``).
            warmup: use the warm-up variants.
            border_to_principal: ``False``: ``B_p`` is a constant in ``L_B``, so only the border net learns (the
                border net first learns the principal's borders before they are fed back; see
                :class:`~monai_ext.engines.cks.CKSTrainer` ``border_start_steps``). ``True``: the paper.

        Returns:
            ``{"loss_m", "loss_s", "loss_b", "loss_mc"}``.
        """
        bsz, _, h, w = fg_logit.shape
        size = bsz * h * w
        s = instance_logits.shape[-1]
        flat, valid = crop_flat_index(instance_origin, instance_batch, s, h, w)
        probs = torch.sigmoid(instance_logits)
        n = instance_logits.shape[0]
        # ---- L_M: principal -> collaborator
        if prior_d is None:
            prior_d = torch.full((n,), self.d, device=fg_logit.device)
        pi, dvec = (self.warmup_pi, torch.full_like(prior_d, self.warmup_d)) if warmup else (self.pi, prior_d)
        if self.prior_center == "window":
            centers = instance_origin.to(probs.dtype) + (s - 1) / 2.0
        else:
            centers = instance_locations.to(probs.dtype)
        prior = gaussian_prior(instance_origin, centers, dvec, s)
        mp = torch.sigmoid(principal_foreground_logit(instance_logits, prior, pi, flat, valid, size))
        if self.points_as_foreground and n > 0:
            yy = instance_locations[:, 0].round().long().clamp(0, h - 1)
            xx = instance_locations[:, 1].round().long().clamp(0, w - 1)
            mp = mp.index_fill(0, instance_batch * h * w + yy * w + xx, 1.0)
        loss_m = consistency_loss_m(mp.view(bsz, 1, h, w), fg_logit, self.consistency_m)
        # ---- L_S: collaborator -> principal
        mc = torch.sigmoid(fg_logit.detach()).reshape(-1)
        mc_crops = gather_crops(mc, flat, valid)
        total = paste_crops(probs, flat, valid, size, reduce="sum")
        others = gather_crops(total, flat, valid) - probs
        others_log = None
        if warmup:
            nlog = F.softplus(instance_logits)  # -log(1 - m)
            others_log = gather_crops(paste_crops(nlog, flat, valid, size, reduce="sum"), flat, valid) - nlog
        loss_s = instance_consistency_loss(instance_logits, mc_crops, others, valid, self.consistency_s, warmup,
                                           others_log)
        # ---- L_B: both
        bp = border_map(probs if border_to_principal else probs.detach(), flat, valid, size, self.sobel)
        mask = None
        if self.border_mask_covered:
            mask = paste_crops(valid.to(probs.dtype), flat, valid, size, reduce="amax") > 0
        loss_b = border_loss(bp, edge_logit, mask)
        # ---- L_MC
        loss_mc = collapse_loss(probs, self.collapse_delta, self.collapse_exponent, valid=valid)
        return {"loss_m": loss_m, "loss_s": loss_s, "loss_b": loss_b, "loss_mc": loss_mc}
