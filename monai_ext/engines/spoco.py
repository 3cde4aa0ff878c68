# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""SPOCO training step (student ``f`` + EMA teacher ``g`` on two augmented views) and the embedding inferer.

One iteration of :class:`SpocoTrainer`: ``e_f = f(view 1)`` with gradients, ``e_g = g(view 2)`` without
(skipped when the consistency weight is 0), ``loss = SpocoLoss(e_f, sparse label, e_g)``, the optimizer step, then
``g <- m g + (1 - m) f`` in :meth:`SpocoTrainer.after_step` (SPOCO performs the same update at the start of the
next forward pass, before ``g``'s pass, so the teacher has the same weights at every teacher pass). With an
optional WGAN shape critic (:mod:`monai_ext.losses.spoco_wgan`) the critic is trained ``critic_iters`` times per
step on real instance masks vs. the student's soft masks, after ``gan_warmup`` iterations.

:class:`SpocoInferer` returns the student embeddings ``(B, E, *spatial)``, or student and teacher embeddings
concatenated ``(B, 2E, *spatial)`` for consistency clustering; whole images by default, sliding windows for large
volumes. Instances come from :class:`~monai_ext.postprocess.clustering.SpocoClusterd` in postprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_ext.engines.base import GuardedTrainer
from monai_ext.errors import TrainingError
from monai_ext.losses.spoco import SpocoLoss
from monai_ext.networks.embedding import EMATeacher
from monai_ext.utils import atomic_save

__all__ = ["SpocoTrainer", "SpocoInferer", "load_teacher"]

logger = logging.getLogger(__name__)


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


class SpocoTrainer(GuardedTrainer):
    """Student step with :class:`~monai_ext.losses.spoco.SpocoLoss` and the EMA teacher update.

    Args:
        spoco_loss: the loss (its weights decide which terms run; the teacher pass is skipped when the
            consistency weight is 0).
        teacher: :class:`~monai_ext.networks.embedding.EMATeacher` of ``network`` (required when the consistency
            weight is > 0; updated after every optimizer step when given).
        view_key: batch key of the teacher's view (falls back to ``image`` when absent).
        label_key: batch key of the sparse instance labels (0 = unlabelled).
        teacher_path: where to write the teacher's plain ``state_dict`` when training completes (rank 0), for
            consistency clustering at inference (``None``: don't).
        shape_loss: optional :class:`~monai_ext.losses.spoco_wgan.WGANShapeLoss` (with its own critic optimizer).
        shape_weight: weight of the generator term ``-D(fake)`` (SPOCO commit 16da87d: 0.1).
        gan_warmup: iterations trained without the shape term (SPOCO: 10k).
        kwargs: :class:`~monai_ext.engines.GuardedTrainer` arguments.
    """

    def __init__(self, *args: Any, spoco_loss: SpocoLoss, teacher: EMATeacher | None = None,
                 view_key: str = "image2", label_key: str = Keys.LABEL, teacher_path: str | Path | None = None,
                 shape_loss: Any | None = None, shape_weight: float = 0.1, gan_warmup: int = 10000,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if spoco_loss.needs_teacher and teacher is None:
            raise ValueError("SpocoTrainer: consistency_weight > 0 needs the EMA teacher (teacher=...)")
        self.spoco_loss = spoco_loss
        self.teacher = teacher
        self.view_key = view_key
        self.label_key = label_key
        self.teacher_path = None if teacher_path is None else Path(teacher_path)
        self.shape_loss = shape_loss
        self.shape_weight = float(shape_weight)
        self.gan_warmup = int(gan_warmup)
        if self.teacher_path is not None and self.teacher is not None:
            from monai_ext.handlers._ignite import Events

            self.add_event_handler(Events.COMPLETED, self._save_teacher)

    def _save_teacher(self, engine: SpocoTrainer) -> None:
        from monai_ext.bundle import is_rank0

        if is_rank0() and self.teacher is not None and self.teacher_path is not None:
            atomic_save(self.teacher.teacher.state_dict(), self.teacher_path)
            logger.info("saved teacher weights %s", self.teacher_path)

    def forward_loss(self, engine: GuardedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        dev = engine.state.device
        try:
            image = batchdata[Keys.IMAGE]
            label = batchdata[self.label_key]
        except KeyError as exc:
            raise TrainingError(f"SPOCO batches need 'image' and '{self.label_key}'; missing {exc}") from exc
        image = torch.as_tensor(image).to(dev, non_blocking=engine.non_blocking).float()
        label = torch.as_tensor(label).to(dev, non_blocking=engine.non_blocking)
        emb_f = engine.network(image)
        emb_g = None
        if self.spoco_loss.needs_teacher:
            view = batchdata.get(self.view_key, batchdata[Keys.IMAGE])
            view = torch.as_tensor(view).to(dev, non_blocking=engine.non_blocking).float()
            self.teacher.train(engine.network.training)  # SPOCO: g follows the mode of f (batch statistics)
            emb_g = self.teacher(view)
        terms = self.spoco_loss.terms(emb_f.float(), label, None if emb_g is None else emb_g.float())
        loss = self.spoco_loss.combine(terms)
        logged = {k: float(v.detach()) for k, v in terms.items()}
        if self.shape_loss is not None:
            shape = self.shape_loss.step(emb_f.float(), label, self.spoco_loss,
                                         train_generator=engine.state.iteration > self.gan_warmup)
            if shape is not None:
                loss = loss + self.shape_weight * shape["generator"]
                logged.update({k: float(v) for k, v in shape.items() if k != "generator"})
                logged["shape"] = float(shape["generator"].detach())
        return {Keys.IMAGE: image, Keys.LABEL: label, Keys.PRED: emb_f, Keys.LOSS: loss, "terms": logged}

    def after_step(self, engine: GuardedTrainer) -> None:
        if self.teacher is not None:
            self.teacher.update(engine.network)


class SpocoInferer(Inferer):
    """Embeddings of whole images (or sliding windows), optionally with the teacher's concatenated.

    Args:
        teacher: teacher network (plain module or :class:`EMATeacher`); when given the output is
            ``cat([f(x), g(x)], 1)`` for consistency clustering (SPOCO feeds ``g`` a colour-jittered and blurred
            view at test time; here ``g`` sees the same image, ``teacher_blur`` > 0 blurs its view
            deterministically instead).
        roi_size: sliding-window size (``None``: whole image).
        sw_batch_size, overlap: sliding-window options.
        teacher_blur: Gaussian sigma (px) of the teacher's view (0: none).
    """

    def __init__(self, teacher: nn.Module | None = None, roi_size: Sequence[int] | int | None = None,
                 sw_batch_size: int = 1, overlap: float = 0.25, teacher_blur: float = 0.0) -> None:
        super().__init__()
        self.teacher = teacher
        self.teacher_blur = float(teacher_blur)
        self.sw = None
        if roi_size is not None:
            self.sw = SlidingWindowInferer(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap,
                                           mode="constant")

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        if self.teacher_blur <= 0:
            return x
        from monai.networks.layers import GaussianFilter

        nd = x.dim() - 2
        return GaussianFilter(nd, self.teacher_blur).to(x.device)(x)

    def _run(self, x: torch.Tensor, network: Callable[..., Any]) -> torch.Tensor:
        out = network(x)
        if self.teacher is not None:
            t = self.teacher.teacher if isinstance(self.teacher, EMATeacher) else self.teacher
            t.eval()
            with torch.no_grad():
                out = torch.cat([out, t(self._blur(x))], dim=1)
        return out

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.sw is None:
            return self._run(inputs, network)
        return self.sw(inputs, lambda x: self._run(x, network))


def load_teacher(network_def: nn.Module, path: str | Path, device: torch.device | str | None = None,
                 required: bool = False) -> nn.Module | None:
    """A copy of ``network_def`` with the teacher weights of ``path`` (``None`` if absent and not ``required``)."""
    import copy

    path = Path(path)
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path}: no teacher weights (train with the EMA teacher first, or cluster with "
                                    "method='meanshift' / 'hdbscan')")
        return None
    net = copy.deepcopy(_unwrap(network_def))
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if device is not None:
        net = net.to(device)
    return net.eval()
