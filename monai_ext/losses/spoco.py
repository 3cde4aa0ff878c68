# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""SPOCO losses (Wolny et al., "Sparse Object-level Supervision for Instance Segmentation with Pixel Embeddings",
CVPR 2022): the discriminative loss over the labelled instances of a positive-unlabelled (PU) label image, the
unlabelled push, the object Dice through the differentiable instance selection, and the student-teacher embedding
consistency on the unlabelled region.

Label convention: ``0`` = **unlabelled** (not background: in SPOCO's CVPPP setting the background is unlabelled too),
``> 0`` = annotated instances, negative ids (``-1``, ignore) are excluded from every term. For one image with
labelled instances ``k = 1..C`` (``n_k`` pixels, mean embedding ``mu_k``) and unlabelled pixels ``U``:

- pull ``L_pull = 1/C sum_k 1/n_k sum_{i in k} [||mu_k - e_i|| - delta_v]_+^2``
- push ``L_push = 1/(C (C - 1)) sum_{k != l} [2 delta_d - ||mu_k - mu_l||]_+^2`` (SPOCO code; the poster's
  ``1/C^2`` with ``push_normalization="squared"``); 0 when ``C < 2``
- regulariser ``L_reg = 1/C sum_k ||mu_k||``
- unlabelled push ``L_upush = 1/C sum_k 1/|U| sum_{i in U} [delta_d - ||mu_k - e_i||]_+^2`` (hinge ``delta_d``,
  not ``2 delta_d``, as in the code)
- differentiable instance selection ``S_k(i) = exp(-||e_i - a_k||^2 / (2 sigma^2))`` with
  ``2 sigma^2 = delta_v^2 / -ln t`` so that ``S_k = t`` at distance ``delta_v`` (``t = kernel_threshold``); the
  anchor ``a_k`` is ``mu_k`` (SPOCO) or, with ``anchor="stable"``, a random pixel of ``k`` within ``delta_v`` of
  ``mu_k`` (torch-em's ``select_stable_anchor``; falls back to ``mu_k``)
- object Dice ``L_obj = 1 - 1/C sum_k 2 sum S_k I_k / (sum S_k^2 + sum I_k^2)`` (V-Net squared denominator)
- consistency ``L_con = 1 - 1/K sum_k Dice(S^f_k, S^g_k)``: ``K <= max_anchors`` unlabelled anchor pixels ``p``
  are drawn one after the other; each gives ``S^f = K(||e^f - e^f(p)||)`` and ``S^g = K(||e^g - e^g(p)||)`` and
  removes the pixels within ``delta_v`` of ``p`` (in both embedding spaces) from the sampling mask; drawing stops
  when less than ``volume_threshold`` of the image is left. Images whose unlabelled fraction is below
  ``volume_threshold`` get no consistency term. No gradient flows through the teacher ``g``.

Per-image terms are averaged over the images of the batch (images without labelled instances contribute 0 to the
instance terms, as in the SPOCO code; images without a consistency term are left out of its mean, see
``consistency_reduction``). The total is
``alpha L_pull + beta L_push + gamma L_reg + w_upush L_upush + w_obj L_obj + lambda L_con`` and **every weight is
used** (the SPOCO code silently ignores its consistency weight and torch-em adds the weight instead of multiplying
it; neither bug is reproduced).

Everything is vectorised over instances (segment sums with ``index_add_``, pairwise distances with ``torch.cdist``);
the pixel x instance distance matrices are evaluated in chunks of at most ``max_elements`` entries, each under
activation checkpointing, so memory stays bounded on large 3D volumes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "SpocoLoss",
    "DiscriminativeLoss",
    "kernel_sigma2",
    "gaussian_kernel",
    "instance_means",
    "TERM_NAMES",
]

#: names of the loss terms, in the order of the weights
TERM_NAMES: tuple[str, ...] = ("pull", "push", "reg", "unlabeled_push", "object", "consistency")


def kernel_sigma2(delta_v: float, threshold: float) -> float:
    """``2 sigma^2`` of the instance-selection kernel so that it equals ``threshold`` at distance ``delta_v``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"kernel_threshold must be in (0, 1), got {threshold}")
    return delta_v * delta_v / (-math.log(threshold))


def gaussian_kernel(sq_dist: torch.Tensor, two_sigma2: float) -> torch.Tensor:
    """``exp(-d^2 / (2 sigma^2))`` of *squared* distances (smooth at 0, unlike a norm)."""
    return torch.exp(-sq_dist / two_sigma2)


def _sq_dist(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(K, N)`` between anchors ``a`` ``(K, E)`` and pixel embeddings ``e`` ``(N, E)``."""
    d = (a * a).sum(1, keepdim=True) + (e * e).sum(1)[None] - 2.0 * (a @ e.t())
    return d.clamp_min(0.0)


def _safe_norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean norm with a finite gradient at 0."""
    return torch.sqrt((x * x).sum(dim).clamp_min(1e-12))


def instance_means(emb: torch.Tensor, inverse: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment means: ``emb`` ``(N, E)`` pixel embeddings, ``inverse`` ``(N,)`` segment index in ``[0, num)``.

    Returns ``(means (num, E), counts (num,))``.
    """
    sums = torch.zeros(num, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add_(0, inverse, emb)
    counts = torch.zeros(num, dtype=emb.dtype, device=emb.device).index_add_(
        0, inverse, torch.ones_like(inverse, dtype=emb.dtype))
    return sums / counts.clamp_min(1.0)[:, None], counts


def _chunk_rows(n_rows: int, n_anchor: int, max_elements: int) -> int:
    return max(1, int(max_elements // max(n_anchor, 1))) if n_rows * n_anchor > max_elements else n_rows


class SpocoLoss(nn.Module):
    """SPOCO loss for positive-unlabelled instance labels (see the module docstring for the formulas).

    Args:
        delta_v: pull hinge ``delta_v`` (SPOCO 0.5).
        delta_d: push hinge ``delta_d`` (SPOCO 2.0; instance means are pushed ``2 delta_d`` apart).
        alpha: pull weight.
        beta: push weight.
        gamma: regulariser weight (SPOCO 0.001).
        unlabeled_push_weight: unlabelled-push weight (SPOCO 1.0; 0 disables the term).
        instance_weight: object Dice weight (SPOCO 1.0).
        consistency_weight: embedding-consistency weight ``lambda`` (SPOCO 1.0; needs teacher embeddings).
        kernel_threshold: kernel value ``t`` at distance ``delta_v`` (SPOCO 0.5).
        anchor: ``"mean"`` (SPOCO) or ``"stable"`` (torch-em) anchor of the object Dice.
        max_anchors: most consistency anchors per image (SPOCO 20).
        volume_threshold: stop drawing consistency anchors when less than this fraction of the image is left
            unlabelled-and-uncovered; images with a smaller unlabelled fraction get no consistency term (0.05).
        push_normalization: ``"pairs"`` (``C (C - 1)``, SPOCO code) or ``"squared"`` (``C^2``, the poster).
        consistency_reduction: ``"mean"`` (over the images that have the term) or ``"sum"`` (SPOCO code: added per
            image, so the effective weight grows with the batch size).
        dice_reduction: ``"mean"`` of the per-instance (per-anchor) Dice, the poster's ``1/C sum_k``, or
            ``"pooled"``: one Dice over all instances of the image, which is what the SPOCO code computes (its masks
            are stacked on the batch axis of a per-channel Dice with a single channel).
        seed: seed of a private generator for the anchor draws (``None``: the global torch RNG, which the bundles
            reseed every epoch). The generator state is saved in the module's state dict.
        max_elements: bound on the entries of one pixel x instance distance block (memory control).

    ``forward(embeddings, target, teacher_embeddings=None)`` returns the weighted total (a scalar tensor);
    :meth:`terms` returns the unweighted terms and :meth:`combine` weights them.
    ``embeddings``/``teacher_embeddings``: ``(B, E, *spatial)``; ``target``: ``(B, 1, *spatial)`` or
    ``(B, *spatial)`` integer instance ids.
    """

    def __init__(
        self,
        delta_v: float = 0.5,
        delta_d: float = 2.0,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 0.001,
        unlabeled_push_weight: float = 1.0,
        instance_weight: float = 1.0,
        consistency_weight: float = 1.0,
        kernel_threshold: float = 0.5,
        anchor: str = "mean",
        max_anchors: int = 20,
        volume_threshold: float = 0.05,
        push_normalization: str = "pairs",
        consistency_reduction: str = "mean",
        dice_reduction: str = "mean",
        seed: int | None = None,
        max_elements: int = 1 << 24,
    ) -> None:
        super().__init__()
        if delta_v <= 0 or delta_d <= 0:
            raise ValueError(f"delta_v and delta_d must be > 0, got {delta_v}, {delta_d}")
        if anchor not in ("mean", "stable"):
            raise ValueError(f"anchor must be 'mean' or 'stable', got {anchor!r}")
        if push_normalization not in ("pairs", "squared"):
            raise ValueError(f"push_normalization must be 'pairs' or 'squared', got {push_normalization!r}")
        if consistency_reduction not in ("mean", "sum"):
            raise ValueError(f"consistency_reduction must be 'mean' or 'sum', got {consistency_reduction!r}")
        if dice_reduction not in ("mean", "pooled"):
            raise ValueError(f"dice_reduction must be 'mean' or 'pooled', got {dice_reduction!r}")
        weights = {"pull": alpha, "push": beta, "reg": gamma, "unlabeled_push": unlabeled_push_weight,
                   "object": instance_weight, "consistency": consistency_weight}
        for name, w in weights.items():
            if not math.isfinite(float(w)) or float(w) < 0:
                raise ValueError(f"loss weight {name} must be a finite number >= 0, got {w}")
        if max_anchors < 1:
            raise ValueError(f"max_anchors must be >= 1, got {max_anchors}")
        self.delta_v = float(delta_v)
        self.delta_d = float(delta_d)
        self.weights: dict[str, float] = {k: float(v) for k, v in weights.items()}
        self.kernel_threshold = float(kernel_threshold)
        self.two_sigma2 = kernel_sigma2(self.delta_v, self.kernel_threshold)
        self.anchor = anchor
        self.max_anchors = int(max_anchors)
        self.volume_threshold = float(volume_threshold)
        self.push_normalization = push_normalization
        self.consistency_reduction = consistency_reduction
        self.dice_reduction = dice_reduction
        self.max_elements = int(max_elements)
        self.seed = seed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))

    # ------------------------------------------------------------------------------------------------ state
    def get_extra_state(self) -> Any:
        return {"generator": self.generator.get_state() if self.generator is not None else None}

    def set_extra_state(self, state: Any) -> None:
        if self.generator is not None and state and state.get("generator") is not None:
            self.generator.set_state(state["generator"])

    @property
    def needs_teacher(self) -> bool:
        """Whether :meth:`terms` uses teacher embeddings (the consistency weight is > 0)."""
        return self.weights["consistency"] > 0

    # ------------------------------------------------------------------------------------------------ API
    def forward(self, embeddings: torch.Tensor, target: torch.Tensor,
                teacher_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        return self.combine(self.terms(embeddings, target, teacher_embeddings))

    def combine(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k weight_k * term_k`` over the terms present (a term whose weight is 0 is left out)."""
        total: torch.Tensor | None = None
        for name in TERM_NAMES:
            w = self.weights[name]
            if w == 0.0 or name not in terms:
                continue
            total = w * terms[name] if total is None else total + w * terms[name]
        if total is None:
            ref = next(iter(terms.values()))
            total = ref * 0.0
        return total

    def terms(self, embeddings: torch.Tensor, target: torch.Tensor,
              teacher_embeddings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Unweighted batch-mean terms ``{pull, push, reg, unlabeled_push, object, consistency}``.

        A term whose weight is 0 is not computed (its value is reported as 0). ``consistency`` needs
        ``teacher_embeddings`` when its weight is > 0.
        """
        emb, tgt = self._check(embeddings, target, teacher_embeddings)
        B = emb.shape[0]
        zero = emb.sum() * 0.0  # keeps the graph (and DDP) happy when every term is empty
        acc = {k: zero for k in TERM_NAMES}
        n_con = 0
        for b in range(B):  # per image (instances inside an image are vectorised)
            img = self._image_terms(emb[b], tgt[b])
            for k in ("pull", "push", "reg", "unlabeled_push", "object"):
                acc[k] = acc[k] + img[k]
            if self.needs_teacher:
                if teacher_embeddings is None:
                    raise ValueError("SpocoLoss: consistency_weight > 0 needs teacher_embeddings")
                con = self._consistency(emb[b], teacher_embeddings[b].detach(), tgt[b])
                if con is not None:
                    acc["consistency"] = acc["consistency"] + con
                    n_con += 1
        out = {k: acc[k] / B for k in ("pull", "push", "reg", "unlabeled_push", "object")}
        if self.consistency_reduction == "mean":
            out["consistency"] = acc["consistency"] / max(n_con, 1)
        else:
            out["consistency"] = acc["consistency"]
        return out

    # ------------------------------------------------------------------------------------------------ helpers
    def _check(self, embeddings: torch.Tensor, target: torch.Tensor,
               teacher: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings.dim() < 3:
            raise ValueError(f"embeddings must be (B, E, *spatial), got shape {tuple(embeddings.shape)}")
        if target.dim() == embeddings.dim():
            if target.shape[1] != 1:
                raise ValueError(f"target must have one channel, got shape {tuple(target.shape)}")
            target = target[:, 0]
        if tuple(target.shape) != (embeddings.shape[0], *embeddings.shape[2:]):
            raise ValueError(f"target shape {tuple(target.shape)} does not match embeddings "
                             f"{tuple(embeddings.shape)} (expected (B, [1,] *spatial))")
        if target.is_floating_point():
            if not torch.equal(target, target.round()):
                raise ValueError("target must hold integer instance ids, got non-integral floats")
        if teacher is not None and teacher.shape != embeddings.shape:
            raise ValueError(f"teacher embeddings {tuple(teacher.shape)} do not match {tuple(embeddings.shape)}")
        return embeddings, target.long()

    def _image_terms(self, emb: torch.Tensor, tgt: torch.Tensor) -> dict[str, torch.Tensor]:
        E = emb.shape[0]
        flat = emb.reshape(E, -1).t()  # (N, E)
        lab = tgt.reshape(-1)
        zero = flat.sum() * 0.0
        out = {k: zero for k in ("pull", "push", "reg", "unlabeled_push", "object")}
        labelled = lab > 0
        if not bool(labelled.any()):
            return out
        ids, inverse = torch.unique(lab[labelled], return_inverse=True)
        C = int(ids.numel())
        e_lab = flat[labelled]
        mu, counts = instance_means(e_lab, inverse, C)
        w = self.weights
        if w["pull"] > 0:
            d = _safe_norm(e_lab - mu[inverse])
            hinge = (d - self.delta_v).clamp_min(0.0) ** 2
            per_inst = torch.zeros(C, dtype=flat.dtype, device=flat.device).index_add_(0, inverse, hinge)
            out["pull"] = (per_inst / counts).sum() / C
        if w["push"] > 0 and C > 1:
            dmu = _safe_norm(mu[:, None, :] - mu[None, :, :])
            off = ~torch.eye(C, dtype=torch.bool, device=flat.device)
            hinge = (2.0 * self.delta_d - dmu[off]).clamp_min(0.0) ** 2
            norm = C * (C - 1) if self.push_normalization == "pairs" else C * C
            out["push"] = hinge.sum() / norm
        if w["reg"] > 0:
            out["reg"] = _safe_norm(mu).mean()
        if w["unlabeled_push"] > 0:
            unl = lab == 0
            n_u = int(unl.sum())
            if n_u > 0:
                out["unlabeled_push"] = self._unlabeled_push(mu, flat[unl]) / n_u / C
        if w["object"] > 0:
            anchors = mu if self.anchor == "mean" else self._stable_anchors(mu, e_lab, inverse, C)
            out["object"] = self._object_dice(anchors, flat, e_lab, inverse, counts)
        return out

    def _unlabeled_push(self, mu: torch.Tensor, e_u: torch.Tensor) -> torch.Tensor:
        """``sum_k sum_i [delta_d - ||mu_k - e_i||]_+^2`` over unlabelled pixels ``e_u`` (chunked)."""

        def block(m: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            d = torch.sqrt(_sq_dist(m, e).clamp_min(1e-12))
            return ((self.delta_d - d).clamp_min(0.0) ** 2).sum()

        rows = _chunk_rows(e_u.shape[0], mu.shape[0], self.max_elements)
        total = mu.sum() * 0.0
        for s in range(0, e_u.shape[0], rows):  # chunks of pixels, bounded memory
            chunk = e_u[s: s + rows]
            total = total + (checkpoint(block, mu, chunk, use_reentrant=False) if rows < e_u.shape[0]
                             else block(mu, chunk))
        return total

    def _self_sums(self, anchors: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """``sum_i S_k(i)^2`` over every pixel, per anchor (chunked over pixels)."""

        def block(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            return (gaussian_kernel(_sq_dist(a, e), self.two_sigma2) ** 2).sum(1)

        n = flat.shape[0]
        rows = _chunk_rows(n, anchors.shape[0], self.max_elements)
        if rows >= n:
            return block(anchors, flat)
        acc = anchors.sum() * 0.0
        for s in range(0, n, rows):  # chunks of pixels, bounded memory
            acc = acc + checkpoint(block, anchors, flat[s: s + rows], use_reentrant=False)
        return acc

    def _object_dice(self, anchors: torch.Tensor, flat: torch.Tensor, e_lab: torch.Tensor, inverse: torch.Tensor,
                     counts: torch.Tensor) -> torch.Tensor:
        """``1 - mean_k Dice(S_k, I_k)`` with binary instance masks ``I_k``, never materialised densely:
        ``sum S_k I_k`` is a segment sum over the pixels of ``k`` and ``sum I_k^2 = n_k``."""
        own = gaussian_kernel(((e_lab - anchors[inverse]) ** 2).sum(1), self.two_sigma2)
        inter = torch.zeros_like(counts).index_add_(0, inverse, own)
        s2 = self._self_sums(anchors, flat)
        return self._reduce_dice(inter, s2 + counts)

    def _reduce_dice(self, inter: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
        if self.dice_reduction == "pooled":
            return 1.0 - 2.0 * inter.sum() / denom.sum().clamp_min(1e-6)
        return 1.0 - (2.0 * inter / denom.clamp_min(1e-6)).mean()

    def _soft_dice(self, a_f: torch.Tensor, f: torch.Tensor, a_g: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``1 - mean_k Dice(S^f_k, S^g_k)`` (V-Net form), teacher side without gradient (chunked over pixels)."""

        def block(af: torch.Tensor, e: torch.Tensor, ag: torch.Tensor, eg: torch.Tensor) -> torch.Tensor:
            s_f = gaussian_kernel(_sq_dist(af, e), self.two_sigma2)
            s_g = gaussian_kernel(_sq_dist(ag, eg), self.two_sigma2)
            return torch.stack([(s_f * s_g).sum(1), (s_f * s_f).sum(1), (s_g * s_g).sum(1)])

        a_g, g = a_g.detach(), g.detach()
        n = f.shape[0]
        rows = _chunk_rows(n, a_f.shape[0], self.max_elements // 2)
        if rows >= n:
            acc = block(a_f, f, a_g, g)
        else:
            acc = a_f.sum() * 0.0
            for s in range(0, n, rows):  # chunks of pixels, bounded memory
                acc = acc + checkpoint(block, a_f, f[s: s + rows], a_g, g[s: s + rows], use_reentrant=False)
        return self._reduce_dice(acc[0], acc[1] + acc[2])

    def _randint(self, high: int) -> int:
        """Uniform integer in ``[0, high)`` from the private generator (or the global torch RNG)."""
        return int(torch.randint(high, (1,), generator=self.generator).item())

    def _stable_anchors(self, mu: torch.Tensor, e_lab: torch.Tensor, inverse: torch.Tensor, C: int) -> torch.Tensor:
        """A random pixel of each instance within ``delta_v`` of its mean (the mean if there is none)."""
        with torch.no_grad():
            close = _safe_norm(e_lab - mu[inverse]) < self.delta_v
            # one uniform key per pixel; the max key among the close pixels of an instance picks the anchor
            keys = torch.rand(e_lab.shape[0], generator=self.generator).to(e_lab.device)
            keys = torch.where(close, keys, torch.full_like(keys, -1.0))
            best = torch.full((C,), -1.0, device=e_lab.device).scatter_reduce(0, inverse, keys, "amax")
            is_best = close & (keys == best[inverse])
            idx = torch.full((C,), -1, dtype=torch.long, device=e_lab.device)
            idx.scatter_(0, inverse[is_best], torch.nonzero(is_best).squeeze(1))
        has = idx >= 0
        picked = e_lab[idx.clamp_min(0)]
        return torch.where(has[:, None], picked, mu)

    def _consistency(self, emb_f: torch.Tensor, emb_g: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor | None:
        """Student-teacher Dice of the soft masks around sequentially drawn unlabelled anchors (one image)."""
        E = emb_f.shape[0]
        f = emb_f.reshape(E, -1).t()
        g = emb_g.reshape(E, -1).t()
        mask = (tgt.reshape(-1) == 0)
        numel = mask.numel()
        if float(mask.sum()) < self.volume_threshold * numel:
            return None
        picks: list[int] = []
        with torch.no_grad():
            fd, gd = f.detach(), g.detach()
            for _ in range(self.max_anchors):  # greedy sequential draws (each removes its neighbourhood)
                remaining = torch.nonzero(mask).squeeze(1)
                if remaining.numel() < self.volume_threshold * numel or remaining.numel() == 0:
                    break
                p = int(remaining[self._randint(int(remaining.numel()))])
                picks.append(p)
                near_f = _sq_dist(fd[p: p + 1], fd)[0] < self.delta_v ** 2
                near_g = _sq_dist(gd[p: p + 1], gd)[0] < self.delta_v ** 2
                mask = mask & ~near_f & ~near_g
                mask[p] = False
        if not picks:
            return None
        idx = torch.tensor(picks, dtype=torch.long, device=f.device)
        return self._soft_dice(f[idx], f, g[idx], g)


class DiscriminativeLoss(SpocoLoss):
    """The discriminative loss of De Brabandere et al. (2017) on the labelled instances only: pull, push and
    regulariser of :class:`SpocoLoss` with the unlabelled push, the object Dice and the consistency switched off
    (the "discriminative loss" baseline at a given label ratio)."""

    def __init__(self, delta_v: float = 0.5, delta_d: float = 2.0, alpha: float = 1.0, beta: float = 1.0,
                 gamma: float = 0.001, push_normalization: str = "pairs", **kwargs: Any) -> None:
        super().__init__(delta_v=delta_v, delta_d=delta_d, alpha=alpha, beta=beta, gamma=gamma,
                         unlabeled_push_weight=0.0, instance_weight=0.0, consistency_weight=0.0,
                         push_normalization=push_normalization, **kwargs)
