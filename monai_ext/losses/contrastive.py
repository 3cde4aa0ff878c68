# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Class-focused cross-domain prototype contrastive loss (arXiv 2510.16450; details from the authors' code).

Target-domain pixel embeddings (anchors) are pulled towards one positive prototype of their class and pushed
away from several prototypes of the other class:

- **foreground anchors**: positive = mean of the target foreground prototype, the target point-instance prototype
  and the **source** foreground prototype (the cross-domain part); negatives = the target background prototype
  and ``K`` k-means sub-centroids of target background embeddings (hard background such as membranes and dense
  organelles, the class-focused part);
- **background anchors**: positive = target background prototype; negatives = target foreground and
  point-instance prototypes and ``K`` k-means sub-centroids of target foreground embeddings.

``L_c = -mean_a log( e^{a.p/t} / (e^{a.p/t} + sum_n e^{a.n/t} + 1e-4) )`` with L2-normalised embeddings and
temperature ``t`` (code: 0.5), summed over the two classes. Anchors of class ``c`` are sampled from the candidate
pixels: ``min(hard_fraction * N, max_anchors)`` of the lowest-confidence ones (hard anchors) plus as many random
ones.

Prototypes live in :class:`PrototypeMemory`: fixed-size FIFO tensors (one queue per prototype kind), updated
without gradient from batch statistics (masked means by one matrix product, k-means by a few vectorised Lloyd
steps). It is a module with buffers, so it is checkpointed with the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeMemory", "ClassFocusedContrastiveLoss", "masked_mean", "kmeans", "sample_anchors"]

#: prototype kinds held by the memory (queue index = position in this tuple).
SLOTS = ("tgt_fg", "tgt_point", "src_fg", "tgt_bg", "fg_sub", "bg_sub")


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """L2-normalised mean of ``(B, D, H, W)`` (already normalised) features over ``mask`` ``(B, H, W)``; ``None``
    when the mask is empty."""
    m = mask.to(features.dtype)
    total = m.sum()
    if float(total) < 1:
        return None
    mean = torch.einsum("bdhw,bhw->d", features, m) / total
    return F.normalize(mean, dim=0)


def kmeans(x: torch.Tensor, k: int, iters: int = 5, generator: torch.Generator | None = None) -> torch.Tensor:
    """``k`` L2-normalised (spherical) k-means centroids of ``(N, D)`` normalised vectors, vectorised Lloyd steps."""
    n = x.shape[0]
    if n == 0:
        return x.new_zeros((0, x.shape[1]))
    k = min(int(k), n)
    idx = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    cent = x[idx].clone()
    for _ in range(max(int(iters), 0)):  # a handful of Lloyd iterations
        assign = (x @ cent.T).argmax(1)
        onehot = F.one_hot(assign, k).to(x.dtype)
        sums = onehot.T @ x
        counts = onehot.sum(0)
        cent = torch.where(counts[:, None] > 0, F.normalize(sums, dim=1), cent)
    return cent


def sample_anchors(candidates: torch.Tensor, confidence: torch.Tensor, max_anchors: int = 512,
                   hard_fraction: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flat indices of anchors among ``candidates`` (bool, any shape): the ``min(hard_fraction * N, max_anchors)``
    lowest-``confidence`` candidates plus as many random candidates (without replacement when possible)."""
    flat = candidates.reshape(-1)
    idx = torch.nonzero(flat, as_tuple=False).reshape(-1)
    n = idx.numel()
    if n == 0:
        return idx
    k = max(1, min(int(hard_fraction * n), int(max_anchors)))
    conf = confidence.reshape(-1)[idx]
    hard = idx[torch.topk(-conf.float(), k).indices]
    perm = torch.randperm(n, generator=generator, device="cpu")[:k].to(idx.device)
    return torch.cat([hard, idx[perm]])


class PrototypeMemory(nn.Module):
    """FIFO queues of class prototypes: ``bank (S, Q, D)``, ``valid (S, Q)``, ``ptr (S,)`` for the kinds in
    :data:`SLOTS`.

    Args:
        dim: embedding dimension.
        size: queue length per kind (the prototype is the normalised mean of the valid entries; sub-centroid kinds
            use all valid entries as negatives).
    """

    def __init__(self, dim: int, size: int = 8) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError("dim and size must be >= 1")
        self.dim, self.size = int(dim), int(size)
        self.register_buffer("bank", torch.zeros(len(SLOTS), self.size, self.dim))
        self.register_buffer("valid", torch.zeros(len(SLOTS), self.size, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros(len(SLOTS), dtype=torch.long))

    @torch.no_grad()
    def push(self, slot: str, vectors: torch.Tensor | None) -> None:
        """Append ``(k, D)`` (or ``(D,)``) detached vectors to a queue, overwriting the oldest."""
        if vectors is None:
            return
        v = vectors.detach().reshape(-1, self.dim).to(self.bank)
        if v.shape[0] == 0:
            return
        s = SLOTS.index(slot)
        v = v[-self.size:]
        pos = (self.ptr[s] + torch.arange(v.shape[0], device=self.ptr.device)) % self.size
        self.bank[s, pos] = v
        self.valid[s, pos] = True
        self.ptr[s] = (self.ptr[s] + v.shape[0]) % self.size

    def prototype(self, slot: str) -> torch.Tensor | None:
        """Normalised mean of a queue's valid entries (``None`` when empty)."""
        s = SLOTS.index(slot)
        valid = self.valid[s]
        if not bool(valid.any()):
            return None
        return F.normalize(self.bank[s][valid].mean(0), dim=0)

    def entries(self, slot: str) -> torch.Tensor:
        s = SLOTS.index(slot)
        return self.bank[s][self.valid[s]]

    def positives_negatives(self, cls: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The positive prototype ``(D,)`` and the negatives ``(M, D)`` of class ``cls`` (1 = foreground)."""
        if cls == 1:
            pos_parts = [self.prototype(k) for k in ("tgt_fg", "tgt_point", "src_fg")]
            neg_parts = [self.prototype("tgt_bg"), self.entries("bg_sub")]
        else:
            pos_parts = [self.prototype("tgt_bg")]
            neg_parts = [self.prototype("tgt_fg"), self.prototype("tgt_point"), self.entries("fg_sub")]
        pos_list = [p for p in pos_parts if p is not None]
        pos = F.normalize(torch.stack(pos_list).mean(0), dim=0) if pos_list else None
        negs = [n.reshape(-1, self.dim) for n in neg_parts if n is not None and n.numel() > 0]
        neg = torch.cat(negs) if negs else self.bank.new_zeros((0, self.dim))
        return pos, neg


class ClassFocusedContrastiveLoss(nn.Module):
    """Prototype contrastive loss with a :class:`PrototypeMemory` (see the module docstring).

    Call :meth:`update_memory` (no gradient) with the batch's masks, then ``forward`` with the anchors' candidates.

    Args:
        dim: embedding dimension (the network's ``proj_dim``).
        temperature: ``t`` (code: 0.5).
        memory_size: queue length per prototype kind.
        num_clusters: k-means sub-centroids per class and update (code: 2).
        kmeans_iters: Lloyd iterations.
        kmeans_samples: embeddings sampled per class for k-means.
        max_anchors: cap of hard (and of random) anchors per class (code: 512).
        hard_fraction: share of candidates taken as hard anchors (code: 0.5).
        eps: constant added to the denominator (code: 1e-4).
    """

    def __init__(self, dim: int = 64, temperature: float = 0.5, memory_size: int = 8, num_clusters: int = 2,
                 kmeans_iters: int = 5, kmeans_samples: int = 1024, max_anchors: int = 512,
                 hard_fraction: float = 0.5, eps: float = 1e-4) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.memory = PrototypeMemory(dim, memory_size)
        self.temperature = float(temperature)
        self.num_clusters = int(num_clusters)
        self.kmeans_iters = int(kmeans_iters)
        self.kmeans_samples = int(kmeans_samples)
        self.max_anchors = int(max_anchors)
        self.hard_fraction = float(hard_fraction)
        self.eps = float(eps)

    @staticmethod
    def normalize(features: torch.Tensor) -> torch.Tensor:
        """L2-normalise ``(B, D, H, W)`` embeddings along ``D``."""
        return F.normalize(features.float(), dim=1)

    def _sample(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        idx = torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)
        if idx.numel() > self.kmeans_samples:
            idx = idx[torch.randperm(idx.numel(), device="cpu")[: self.kmeans_samples].to(idx.device)]
        return flat[idx]

    @torch.no_grad()
    def update_memory(self, tgt_features: torch.Tensor, tgt_fg: torch.Tensor, tgt_bg: torch.Tensor,
                      tgt_point: torch.Tensor | None = None, src_features: torch.Tensor | None = None,
                      src_fg: torch.Tensor | None = None) -> None:
        """Push this batch's prototypes (features ``(B, D, H, W)`` normalised; masks ``(B, H, W)`` bool)."""
        tf = tgt_features.detach()
        mem = self.memory
        mem.push("tgt_fg", masked_mean(tf, tgt_fg))
        mem.push("tgt_bg", masked_mean(tf, tgt_bg))
        if tgt_point is not None:
            mem.push("tgt_point", masked_mean(tf, tgt_point))
        if src_features is not None and src_fg is not None:
            mem.push("src_fg", masked_mean(src_features.detach(), src_fg))
        if self.num_clusters > 0:
            for slot, mask in (("fg_sub", tgt_fg), ("bg_sub", tgt_bg)):
                x = self._sample(tf, mask)
                if x.shape[0] >= self.num_clusters:
                    mem.push(slot, kmeans(x, self.num_clusters, self.kmeans_iters))

    def forward(self, features: torch.Tensor, candidates: Sequence[torch.Tensor], confidence: Sequence[torch.Tensor]
                ) -> torch.Tensor:
        """Loss of target embeddings ``(B, D, H, W)`` (normalised) for the anchor candidates of class 0 and 1
        (``candidates[c]`` bool ``(B, H, W)``) with per-pixel confidence ``confidence[c]`` (lower = harder)."""
        flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        total = features.sum() * 0.0
        for cls in (0, 1):
            pos, neg = self.memory.positives_negatives(cls)
            if pos is None or neg.shape[0] == 0:
                continue
            idx = sample_anchors(candidates[cls], confidence[cls], self.max_anchors, self.hard_fraction)
            if idx.numel() == 0:
                continue
            a = flat[idx]
            lp = (a @ pos.to(a)) / self.temperature
            ln = (a @ neg.to(a).T) / self.temperature
            denom = torch.logsumexp(torch.cat([lp[:, None], ln], 1), 1)
            denom = torch.logaddexp(denom, torch.full_like(denom, self.eps).log())
            total = total + (denom - lp).mean()
        return total
