# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Optional WGAN-GP shape prior of SPOCO (commit 16da87d of the authors' code, removed later; the poster reports
Ovules ARand 0.042 with it vs. 0.048 without).

A critic ``D`` learns to tell ground-truth instance masks (real, the labelled instances) from the student's soft
instance masks ``S_k`` (fake: the differentiable instance selection around each labelled instance's anchor), with
the Wasserstein loss and a gradient penalty (``lambda_gp = 10``); the embedding network gets the generator term
``-D(S_k)`` (weighted 0.1 by :class:`~monai_ext.engines.spoco.SpocoTrainer`). As in the code: ``critic_iters = 2``
critic updates per generator step, Adam(1e-4, betas (0.5, 0.9)) for the critic, images with ``>= max_instances``
labelled instances skipped, the first ``gan_warmup`` iterations without the generator term.

Critic: a convolutional encoder without normalisation (as SPOCO: conv + LeakyReLU blocks, max-pool), then global
average pooling and a linear layer to a scalar (SPOCO flattens a fixed-size map into its linear layer; pooling keeps
the critic independent of the patch size). The critic is not synchronised across DDP ranks: use it in single-process
training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ext.losses.spoco import SpocoLoss, _sq_dist, gaussian_kernel, instance_means

__all__ = ["ShapeCritic", "WGANShapeLoss"]


class ShapeCritic(nn.Module):
    """Wasserstein critic of single-channel instance masks ``(K, 1, *spatial)`` -> ``(K,)``.

    Args:
        spatial_dims: 2 or 3.
        features: channels per level (each level: two 3x3 conv + LeakyReLU(0.2), then max-pool 2).
    """

    def __init__(self, spatial_dims: int = 2, features: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        layers: list[nn.Module] = []
        prev = 1
        for i, f in enumerate(features):
            if i > 0:
                layers.append(pool(2))
            layers += [conv(prev, f, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                       conv(f, f, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            prev = f
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(prev, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        return self.head(h.flatten(2).mean(-1)).squeeze(-1)


class WGANShapeLoss(nn.Module):
    """WGAN-GP shape term for SPOCO, with its own critic and critic optimizer (both in the state dict).

    Args:
        critic: the critic (default: a 2D :class:`ShapeCritic`).
        lr, betas: critic Adam settings (SPOCO: 1e-4, (0.5, 0.9)).
        gp_weight: gradient-penalty weight (10).
        critic_iters: critic updates per call (2).
        max_instances: images with at least this many labelled instances are skipped (40).
        max_masks: at most this many masks per batch go to the critic (memory bound; drawn at random).
    """

    def __init__(self, critic: nn.Module | None = None, lr: float = 1e-4, betas: Sequence[float] = (0.5, 0.9),
                 gp_weight: float = 10.0, critic_iters: int = 2, max_instances: int = 40, max_masks: int = 32) -> None:
        super().__init__()
        self.critic = critic if critic is not None else ShapeCritic()
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(float(betas[0]), float(betas[1])))
        self.gp_weight = float(gp_weight)
        self.critic_iters = int(critic_iters)
        self.max_instances = int(max_instances)
        self.max_masks = int(max_masks)

    def get_extra_state(self) -> Any:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        if state and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])

    def masks(self, emb: torch.Tensor, target: torch.Tensor, spoco: SpocoLoss) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Real ``(K, 1, *S)`` binary masks and fake soft masks (with gradient) of the labelled instances."""
        if target.dim() == emb.dim():
            target = target[:, 0]
        reals, fakes = [], []
        for b in range(emb.shape[0]):  # per image
            lab = target[b].reshape(-1).long()
            labelled = lab > 0
            if not bool(labelled.any()):
                continue
            ids, inverse = torch.unique(lab[labelled], return_inverse=True)
            if ids.numel() >= self.max_instances:
                continue
            flat = emb[b].reshape(emb.shape[1], -1).t()
            mu, _ = instance_means(flat[labelled], inverse, int(ids.numel()))
            s = gaussian_kernel(_sq_dist(mu, flat), spoco.two_sigma2)
            fakes.append(s.reshape(-1, 1, *emb.shape[2:]))
            reals.append((lab[None] == ids[:, None]).to(emb.dtype).reshape(-1, 1, *emb.shape[2:]))
        if not fakes:
            return None
        real, fake = torch.cat(reals), torch.cat(fakes)
        if len(real) > self.max_masks:
            keep = torch.randperm(len(real))[: self.max_masks].to(real.device)
            real, fake = real[keep], fake[keep]
        return real, fake

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        out = self.critic(mix)
        (grad,) = torch.autograd.grad(out.sum(), mix, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()

    def step(self, emb: torch.Tensor, target: torch.Tensor, spoco: SpocoLoss,
             train_generator: bool = True) -> dict[str, Any] | None:
        """Train the critic ``critic_iters`` times, then return ``{"generator": -D(fake).mean(), "critic": ...,
        "wasserstein": ...}`` (``generator`` is 0 while ``train_generator`` is false); ``None`` without masks."""
        pair = self.masks(emb, target, spoco)
        if pair is None:
            return None
        real, fake = pair
        self.critic.train()
        with torch.enable_grad():
            for _ in range(self.critic_iters):
                self.optimizer.zero_grad(set_to_none=True)
                d_real = self.critic(real).mean()
                d_fake = self.critic(fake.detach()).mean()
                gp = self._gradient_penalty(real, fake.detach())
                critic_loss = d_fake - d_real + self.gp_weight * gp
                critic_loss.backward()
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if train_generator:
            for p in self.critic.parameters():
                p.requires_grad_(False)
            gen = -self.critic(fake).mean()
            for p in self.critic.parameters():
                p.requires_grad_(True)
        else:
            gen = fake.sum() * 0.0
        return {"generator": gen, "critic": float(critic_loss.detach()),
                "wasserstein": float((d_real - d_fake).detach())}
