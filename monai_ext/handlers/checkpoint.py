# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Crash-safe checkpoints: atomic saves of the whole training state and automatic resume."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_ext.errors import StorageError, TrainingError
from monai_ext.utils import atomic_save, get_rng_state, set_rng_state

from ._ignite import Engine, Events

__all__ = ["TrainingCheckpoint", "unwrap_module"]

logger = logging.getLogger(__name__)


def unwrap_module(net: torch.nn.Module) -> torch.nn.Module:
    """Return the module inside DataParallel / DistributedDataParallel wrappers.

    Only those wrappers are unwrapped: other modules with a ``module`` attribute (an EMA teacher) keep their own
    state (e.g. the EMA update count), which a resumed run needs.
    """
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return net.module if isinstance(net, wrappers) else net


class TrainingCheckpoint:
    """Save everything needed to resume training, atomically, and resume from it on start.

    Every ``save_interval`` epochs (and when training completes) ``<ckpt_dir>/last.pt`` is replaced
    through a temporary file and a rename, so a crash, a SIGKILL or a full disk never leaves a
    half-written checkpoint. It holds the ``state_dict()`` of each object in ``save_dict`` (network,
    optimizer, scheduler, EMA teacher, the trainer engine, pseudo-label round state, ...) and the RNG
    state. On ``STARTED`` the checkpoint is loaded when ``resume`` is true, so re-running the same
    command continues the run from the last completed epoch. On completion the plain network weights
    are also written to ``final_model_path`` (what inference, export and MONAI Label load).

    A save that fails (disk full, file size limit, read-only folder) raises
    :class:`~monai_ext.errors.StorageError` naming the file and the epoch of the checkpoint still on disk,
    instead of training on without a checkpoint.

    Args:
        ckpt_dir: folder for ``last.pt``.
        save_dict: name -> object with ``state_dict`` / ``load_state_dict``. Include the trainer engine
            under ``"trainer"`` so epoch and iteration counters resume.
        save_interval: save every this many epochs.
        resume: load ``last.pt`` at start if it exists.
        final_model_path: where to write the final network ``state_dict`` (``None`` disables).
        network_key: key in ``save_dict`` of the network saved to ``final_model_path``.
        save_final: also save ``last.pt`` when training completes (e.g. after early termination).
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        resume: bool = True,
        final_model_path: str | Path | None = None,
        network_key: str = "network",
        save_final: bool = True,
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}")
        self.ckpt_dir = Path(ckpt_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.resume = bool(resume)
        self.final_model_path = None if final_model_path is None else Path(final_model_path)
        self.network_key = network_key
        self.save_final = save_final
        self.resumed_from: int | None = None
        self.saved_epoch: int | None = None  # epoch of the checkpoint known to be on disk

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _is_rank0(self) -> bool:
        return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
            torch.distributed.get_rank() == 0
        )

    def state(self, engine: Engine) -> dict[str, Any]:
        """The checkpoint content: every object's state_dict plus the RNG state."""
        out: dict[str, Any] = {}
        for key, obj in self.save_dict.items():
            obj = unwrap_module(obj) if isinstance(obj, torch.nn.Module) else obj
            out[key] = obj.state_dict()
        out["rng"] = get_rng_state()
        out["epoch"] = int(engine.state.epoch)
        return out

    def save(self, engine: Engine) -> None:
        """Atomically replace ``last.pt`` with the current state (rank 0 only)."""
        if not self._is_rank0():
            return
        self._write(self.state(engine), self.last_path, f"checkpoint of epoch {engine.state.epoch}")
        self.saved_epoch = int(engine.state.epoch)
        logger.info("saved checkpoint %s at epoch %d", self.last_path, engine.state.epoch)

    def _write(self, obj: Any, path: Path, what: str) -> None:
        """``atomic_save`` with an error that says what failed and what is still intact."""
        try:
            atomic_save(obj, path)
        except OSError as exc:
            reason = exc.__cause__ or exc
            kept = (
                f"the checkpoint of epoch {self.saved_epoch} in {self.last_path} is intact"
                if self.saved_epoch is not None and self.last_path.exists()
                else "no earlier file was changed"
            )
            raise StorageError(
                f"cannot write the {what} ({reason}); the disk may be full or the folder not writable. "
                f"Nothing was half-written: {kept}. Free space (or fix the folder) and re-run the same command "
                "to resume.",
                path,
                getattr(reason, "errno", None) or exc.errno,
            ) from exc

    def load(self, engine: Engine) -> None:
        """Restore ``last.pt`` into every object (called on ``STARTED``)."""
        if not self.resume or not self.last_path.exists():
            return
        try:
            ckpt = torch.load(self.last_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file: say which and why, never train from garbage
            raise TrainingError(
                f"cannot resume from {self.last_path}: the checkpoint is unreadable ({exc}). "
                "Delete it to start afresh."
            ) from exc
        missing = [k for k in self.save_dict if k not in ckpt]
        if missing:
            raise TrainingError(
                f"cannot resume from {self.last_path}: it lacks {missing} (written by another configuration?). "
                "Use another ckpt_dir or delete it to start afresh."
            )
        prior_max_epochs = engine.state.max_epochs
        for key, obj in self.save_dict.items():
            obj = unwrap_module(obj) if isinstance(obj, torch.nn.Module) else obj
            self._load_one(key, obj, ckpt[key])
        if prior_max_epochs is not None:
            if engine.state.epoch > prior_max_epochs:
                raise TrainingError(
                    f"{self.last_path} is at epoch {engine.state.epoch}, beyond max_epochs={prior_max_epochs}; "
                    "raise max_epochs to continue training"
                )
            engine.state.max_epochs = prior_max_epochs
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.resumed_from = int(ckpt.get("epoch", engine.state.epoch))
        self.saved_epoch = self.resumed_from
        logger.info("resumed from %s (epoch %d)", self.last_path, self.resumed_from)

    def _load_one(self, key: str, obj: Any, state: Any) -> None:
        """``obj.load_state_dict(state)``; checkpoints of older versions stored only ``obj.module`` of wrapper-like
        modules (EMA teachers): those still load, with a warning that the wrapper's own state restarts."""
        try:
            obj.load_state_dict(state)
        except RuntimeError:
            inner = getattr(obj, "module", None)
            if not isinstance(obj, torch.nn.Module) or not isinstance(inner, torch.nn.Module):
                raise
            inner.load_state_dict(state)
            logger.warning("%s: %r holds only the weights of %s.module (older checkpoint); its other state restarts",
                           self.last_path, key, type(obj).__name__)

    def completed(self, engine: Engine) -> None:
        if not self._is_rank0():
            return
        if self.save_final:
            self.save(engine)
        if self.final_model_path is not None and self.network_key in self.save_dict:
            net = unwrap_module(self.save_dict[self.network_key])
            self._write(net.state_dict(), self.final_model_path, "final network weights")
            logger.info("saved final weights %s", self.final_model_path)
