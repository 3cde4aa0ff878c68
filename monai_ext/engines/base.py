# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""A MONAI trainer whose step is a method to override, guarded against non-finite losses."""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from monai_ext.errors import TrainingError

__all__ = ["GuardedTrainer", "batch_ids"]

logger = logging.getLogger(__name__)


def batch_ids(batch: Any) -> list[str]:
    """Sample ids of a collated batch (from ``meta['id']``), for error messages."""
    try:
        ids = batch["meta"]["id"]
        return [str(i) for i in ids] if isinstance(ids, (list, tuple)) else [str(ids)]
    except (KeyError, TypeError, IndexError):
        return []


class GuardedTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for weak supervision: subclasses write :meth:`forward_loss`.

    One iteration: ``zero_grad`` -> :meth:`forward_loss` (returns a dict with ``Keys.LOSS`` and, under
    ``"terms"``, the named loss terms as floats) -> finite-loss check -> backward (with a GradScaler
    under CUDA AMP) -> optional gradient clipping -> ``optimizer.step`` -> :meth:`after_step`
    (EMA teachers, schedules). ``IterationEvents`` are fired as in MONAI.

    As in MONAI, ``engine.state.output`` ends up as the decollated list of per-sample dicts (always a
    list, so that ``from_engine(['loss'], first=True)`` -- used by the StatsHandler and by the MLflow handler
    that ``--tracking mlflow`` adds -- reads the loss); the named loss terms are kept whole in
    ``engine.state.loss_terms`` (read by :class:`~monai_ext.handlers.LossTermsLogger`).

    A NaN or infinite loss never reaches the weights. With ``nonfinite="raise"`` (default) a
    :class:`~monai_ext.errors.TrainingError` names the epoch, the iteration, the sample ids and the
    loss terms; the last checkpoint on disk stays intact. With ``nonfinite="skip"`` the batch is
    skipped with a warning and counted in ``engine.state.skipped_batches``; more than
    ``max_skipped`` skips in a row raise.

    Args:
        nonfinite: ``"raise"`` or ``"skip"``.
        max_skipped: consecutive skipped batches tolerated before raising.
        grad_clip: max gradient norm (``None``: no clipping).
        kwargs: passed to :class:`monai.engines.SupervisedTrainer` (``loss_function`` may be ``None``).
    """

    def __init__(
        self,
        *args: Any,
        nonfinite: str = "raise",
        max_skipped: int = 10,
        grad_clip: float | None = None,
        **kwargs: Any,
    ) -> None:
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
        kwargs.setdefault("loss_function", None)
        super().__init__(*args, **kwargs)
        self.nonfinite = nonfinite
        self.max_skipped = int(max_skipped)
        self.grad_clip = grad_clip
        self.state.skipped_batches = 0
        self._consecutive_skips = 0
        self.scaler = torch.amp.GradScaler("cuda") if (self.amp and torch.cuda.is_available()) else None

    # -- to override -------------------------------------------------------------------------
    def forward_loss(self, engine: GuardedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        """Compute the loss of one batch. Default: supervised ``loss_function(network(image), label)``."""
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        pred = engine.inferer(inputs, engine.network)
        loss = engine.loss_function(pred, targets).mean()
        return {Keys.IMAGE: inputs, Keys.LABEL: targets, Keys.PRED: pred, Keys.LOSS: loss}

    def after_step(self, engine: GuardedTrainer) -> None:
        """Hook run after each optimizer step (e.g. EMA teacher update)."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters whose gradients are clipped."""
        params: list[torch.nn.Parameter] = []
        for group in self.optimizer.param_groups:
            params.extend(p for p in group["params"] if p.grad is not None)
        return params

    # -- the guarded step --------------------------------------------------------------------
    def _iteration(self, engine: GuardedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        device_type = torch.device(engine.state.device).type if engine.state.device is not None else "cpu"
        use_amp = bool(engine.amp) and device_type == "cuda"
        with torch.autocast(device_type=device_type, enabled=use_amp):
            out = self.forward_loss(engine, batchdata)
        engine.state.loss_terms = dict(out.pop("terms", {}) or {})
        engine.state.output = out
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss = out[Keys.LOSS]
        if not torch.isfinite(loss.detach()).all():
            self._handle_nonfinite(engine, batchdata, out)
            return self._finish(engine, out, loss)
        self._consecutive_skips = 0
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.grad_clip:
                self.scaler.unscale_(engine.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.grad_clip)
            self.scaler.step(engine.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.grad_clip)
            engine.optimizer.step()
        self.after_step(engine)
        return self._finish(engine, out, loss)

    @staticmethod
    def _finish(engine: GuardedTrainer, out: dict[str, Any], loss: torch.Tensor) -> list[dict[str, Any]]:
        """Fire ``MODEL_COMPLETED`` (MONAI decollates and post-processes there) and return a list of dicts."""
        out[Keys.LOSS] = loss.detach()
        engine.state.output = out
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        result = engine.state.output
        if isinstance(result, dict):  # nothing batched to decollate (loss only): still MONAI's list form
            result = [result]
        engine.state.output = result
        return result

    def _handle_nonfinite(self, engine: GuardedTrainer, batchdata: Any, out: dict[str, Any]) -> None:
        terms = engine.state.loss_terms
        where = (
            f"non-finite loss {float(out[Keys.LOSS].detach()):.4g} at epoch {engine.state.epoch}, "
            f"iteration {engine.state.iteration}; samples {batch_ids(batchdata) or '?'}; terms {terms}"
        )
        engine.optimizer.zero_grad(set_to_none=True)
        if self.nonfinite == "skip":
            engine.state.skipped_batches += 1
            self._consecutive_skips += 1
            if self._consecutive_skips > self.max_skipped:
                raise TrainingError(f"{where}; {self._consecutive_skips} batches in a row were non-finite")
            logger.warning("skipping batch: %s", where)
            return
        raise TrainingError(
            f"{where}. The weights were not updated and the last checkpoint is intact. "
            "Check the input images for NaN/inf, lower the learning rate, or set nonfinite='skip'."
        )
