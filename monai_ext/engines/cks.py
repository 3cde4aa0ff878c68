# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""One CKS training step: principal (LACSS) + collaborator updated together with the paper's gradient split.

Per batch (Yu 2023, Sec. III-E)::

    principal:     L_pr = l_det L_det + l_S L_S + l_B L_B + l_MC L_MC
    collaborator:  L_co = l_M L_M + l_B L_B

Both are obtained from *one* backward pass of ``L_det + L_S + L_B + L_MC + L_M``: ``M_p`` is detached inside ``L_M``
and ``M_c`` inside ``L_S`` (see :mod:`monai_ext.losses.cks`), so the principal's parameters receive exactly
``dL_pr/dtheta_p`` and the collaborator's exactly ``dL_co/dtheta_c``; one optimizer (holding both parameter sets)
then steps both models. ``mode="supervised"`` trains the principal alone with the mask BCE (the upper bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_ext.engines.base import GuardedTrainer
from monai_ext.errors import TrainingError
from monai_ext.handlers.loss_terms import LossTermsLogger
from monai_ext.losses.cks import CKSLoss, supervised_mask_loss
from monai_ext.losses.detection import PointDetectionLoss
from monai_ext.postprocess.points import crop_flat_index, gather_crops

__all__ = ["CKSTrainer", "cks_step_losses", "train_val_records", "CKSLossTermsLogger"]


def train_val_records(reader: Any, val_fraction: float = 0.15, seed: int = 0,
                      train_split: str = "train") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation records of a dataset reader.

    Validation needs instance masks: the reader's ``val`` split when there is one (LIVECell); otherwise a seeded
    ``val_fraction`` of the training records that carry a mask (A431 with ``mask_file``); otherwise the ``test``
    split (A431 without training masks: validation then only monitors, it selects nothing); otherwise none.
    """
    from monai_ext.data.readers.base import split_datalist

    splits = reader.splits()
    records = reader.datalist(train_split)
    if "val" in splits:
        return records, reader.datalist("val")
    with_mask = [r for r in records if r.get("label")]
    if with_mask and val_fraction > 0 and len(records) > 1:
        train, val = split_datalist(records, val_fraction, seed)
        return train, [r for r in val if r.get("label")]
    if "test" in splits:
        return records, reader.datalist("test")
    return records, []


def _plain(x: Any, device: torch.device | str | None) -> torch.Tensor:
    t = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return t.to(device) if device is not None else t


def cks_step_losses(
    network: nn.Module,
    collaborator: nn.Module | None,
    batch: Mapping[str, Any],
    detection_loss: PointDetectionLoss,
    cks_loss: CKSLoss | None,
    mode: str = "cks",
    weights: Mapping[str, float] | None = None,
    warmup: bool = False,
    device: torch.device | str | None = None,
    border_to_principal: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and named terms of one batch (used by :class:`CKSTrainer`; callable alone for tests).

    Batch keys: ``image`` ``(B, C, H, W)``, ``points`` ``(B, N, 2)`` (padded with -1), ``points_valid`` ``(B, N)``,
    optional ``prior_d`` ``(B,)`` (per-image size prior), ``class_index`` ``(B,)`` (collaborator class), and for
    ``mode="supervised"`` ``label`` ``(B, 1, H, W)`` + optional ``point_ids`` ``(B, N)`` (instance id per point;
    default: the label under the point). ``border_to_principal=False``: ``L_B`` trains the border net only.
    """
    lam = {"det": 1.0, "s": 1.0, "b": 1.0, "mc": 1.0, "m": 1.0, "sup": 1.0}
    lam.update(weights or {})
    image = _plain(batch["image"], device).float()
    points = _plain(batch["points"], device).float()
    valid = _plain(batch["points_valid"], device).bool() if "points_valid" in batch else (points >= 0).all(-1)
    out = network(image, points, valid)
    focal, offset = detection_loss(out["det_logits"], out["det_offsets"], out["det_strides"], points, valid)
    terms: dict[str, torch.Tensor] = {"loss_det_focal": focal, "loss_det_offset": offset}
    total = lam["det"] * (focal + offset)
    bsz, _, h, w = image.shape
    logits, origin, ib = out["instance_logits"], out["instance_origin"], out["instance_batch"]
    if mode == "supervised":
        if "label" not in batch:
            raise TrainingError("mode='supervised' needs a 'label' in every batch (ground-truth instance masks)")
        label = _plain(batch["label"], device).long().reshape(bsz, h, w)
        flat, inside = crop_flat_index(origin, ib, logits.shape[-1], h, w)
        if "point_ids" in batch:
            pid = _plain(batch["point_ids"], device).long()[ib, out["instance_index"]]
        else:
            loc = out["instance_locations"].round().long()
            pid = label[ib, loc[:, 0].clamp(0, h - 1), loc[:, 1].clamp(0, w - 1)]
        target = gather_crops(label.reshape(-1), flat, inside, fill=0) == pid[:, None, None]
        target = target & (pid[:, None, None] > 0)
        sup = supervised_mask_loss(logits, target, inside)
        terms["loss_sup"] = sup
        total = total + lam["sup"] * sup
    elif mode == "cks":
        if collaborator is None or cks_loss is None:
            raise TrainingError("mode='cks' needs a collaborator and a CKSLoss")
        cls = _plain(batch["class_index"], device).long() if "class_index" in batch else None
        fg, edge = collaborator(image, cls)
        prior_d = None
        if "prior_d" in batch:
            prior_d = _plain(batch["prior_d"], device).float().reshape(-1)[ib]
        cks = cks_loss(logits, origin, ib, out["instance_locations"], fg, edge, prior_d, warmup, border_to_principal)
        terms.update(cks)
        total = total + lam["s"] * cks["loss_s"] + lam["b"] * cks["loss_b"] + lam["mc"] * cks["loss_mc"] \
            + lam["m"] * cks["loss_m"]
    else:
        raise ValueError(f"mode must be 'cks' or 'supervised', got {mode!r}")
    terms["n_cells"] = torch.tensor(float(logits.shape[0]))
    return total, terms


class CKSTrainer(GuardedTrainer):
    """Ignite/MONAI trainer of CKS (see the module docstring).

    Args:
        collaborator: the :class:`~monai_ext.networks.collaborator.Collaborator` (``None`` for ``"supervised"``);
            its parameters must be in ``optimizer``.
        detection_loss: :class:`~monai_ext.losses.detection.PointDetectionLoss`.
        cks_loss: :class:`~monai_ext.losses.cks.CKSLoss` (``None`` for ``"supervised"``).
        mode: ``"cks"`` (point supervision) or ``"supervised"`` (mask BCE, the upper bound).
        loss_weights: lambdas ``{"det", "s", "b", "mc", "m", "sup"}`` (all 1 in the paper).
        warmup_steps: iterations with the released code's warm-up losses (0: none, as the paper).
        border_start_steps: iterations during which ``L_B`` trains the collaborator's border net only (``B_p``
            constant); 0 (paper): both models from the first step. Before the masks take shape the border net can
            only learn "no border", and ``L_B`` then acts on the principal as a perimeter penalty that shrinks every
            mask; the paper notes that its collaborator learns borders only late in training, so short schedules
            let the border net learn the principal's borders first.
        kwargs: :class:`~monai_ext.engines.base.GuardedTrainer` / ``SupervisedTrainer`` arguments
            (``device``, ``max_epochs``, ``train_data_loader``, ``network``, ``optimizer``, ...).
    """

    def __init__(self, *args: Any, collaborator: nn.Module | None = None,
                 detection_loss: PointDetectionLoss | None = None, cks_loss: CKSLoss | None = None,
                 mode: str = "cks", loss_weights: Mapping[str, float] | None = None, warmup_steps: int = 0,
                 border_start_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if mode not in ("cks", "supervised"):
            raise ValueError(f"mode must be 'cks' or 'supervised', got {mode!r}")
        if mode == "cks" and (collaborator is None or cks_loss is None):
            raise ValueError("mode='cks' needs collaborator and cks_loss")
        self.collaborator = collaborator
        self.detection_loss = detection_loss or PointDetectionLoss()
        self.cks_loss = cks_loss
        self.mode = mode
        self.loss_weights = dict(loss_weights or {})
        self.warmup_steps = int(warmup_steps)
        self.border_start_steps = int(border_start_steps)
        if collaborator is not None and mode == "cks":
            opt_params = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
            missing = [n for n, p in collaborator.named_parameters() if id(p) not in opt_params]
            if missing:
                raise ValueError(f"the optimizer does not hold the collaborator's parameters (e.g. {missing[0]})")

    def forward_loss(self, engine: GuardedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        if self.collaborator is not None:
            self.collaborator.train()
        warm = engine.state.iteration <= self.warmup_steps
        total, terms = cks_step_losses(
            engine.network, self.collaborator, batchdata, self.detection_loss, self.cks_loss, self.mode,
            self.loss_weights, warm, engine.state.device, engine.state.iteration > self.border_start_steps,
        )
        return {Keys.LOSS: total, "terms": {k: float(v.detach()) for k, v in terms.items()}}


class CKSLossTermsLogger(LossTermsLogger):
    """Kept for configs written against it: :class:`~monai_ext.handlers.LossTermsLogger` now reads the terms from
    ``engine.state.loss_terms``, whatever the output's form."""