# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Self-training rounds driven from an Ignite trainer: build, persist and switch pseudo-labels."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from monai_ext.pseudo.store import PseudoLabelStore

from ._ignite import Engine, Events

__all__ = ["PseudoLabelRounds"]

logger = logging.getLogger(__name__)


def _dist() -> tuple[bool, int]:
    on = torch.distributed.is_available() and torch.distributed.is_initialized()
    return on, (torch.distributed.get_rank() if on else 0)


class PseudoLabelRounds:
    """Run ``num_rounds`` rounds of ``epochs_per_round`` epochs, each on freshly built pseudo-labels.

    Round ``r`` is built (by ``builder(r, engine)``, which writes every sample through
    ``store.write(r, id, ...)`` and returns a dict of statistics) before epoch
    ``r * epochs_per_round + 1``: round 0 at ``STARTED``, later rounds at the end of the previous
    round's last epoch. A round already complete on disk is reused, never rebuilt, so a run resumed
    after a crash in round k starts from round k's labels. Under ``torch.distributed`` rank 0 builds
    and the other ranks wait at a barrier.

    Scalar statistics are published as ``engine.state.metrics["pseudo_<name>"]`` (picked up by the
    StatsHandler and MLflow) and the whole dict is kept in ``engine.state.pseudo_stats``.

    Attach after the checkpoint handler, so that a resumed epoch counter is seen.

    Args:
        store: where rounds live.
        builder: ``builder(round_index, engine) -> stats``.
        num_rounds: number of rounds (>= 1).
        epochs_per_round: epochs trained on each round's labels (>= 1).
        callbacks: called as ``cb(round_index, stats, engine)`` after each round is ready (plots, logging).
    """

    def __init__(
        self,
        store: PseudoLabelStore,
        builder: Callable[[int, Any], dict[str, Any]],
        num_rounds: int,
        epochs_per_round: int,
        callbacks: list[Callable[[int, dict[str, Any], Any], None]] | None = None,
    ) -> None:
        if num_rounds < 1 or epochs_per_round < 1:
            raise ValueError("num_rounds and epochs_per_round must be >= 1")
        self.store = store
        self.builder = builder
        self.num_rounds = int(num_rounds)
        self.epochs_per_round = int(epochs_per_round)
        self.callbacks = list(callbacks or [])
        self.history: dict[int, dict[str, Any]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)

    def round_of_epoch(self, epoch: int) -> int:
        """Round whose labels epoch ``epoch`` (1-based) trains on."""
        return min(max(epoch - 1, 0) // self.epochs_per_round, self.num_rounds - 1)

    def _on_started(self, engine: Engine) -> None:
        self.ensure(self.round_of_epoch(engine.state.epoch + 1), engine)

    def _on_epoch_completed(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.epochs_per_round == 0 and epoch < (engine.state.max_epochs or epoch + 1):
            nxt = epoch // self.epochs_per_round
            if nxt < self.num_rounds:
                self.ensure(nxt, engine)

    def ensure(self, rnd: int, engine: Engine) -> dict[str, Any]:
        """Make round ``rnd`` current, building it if it is not on disk yet."""
        distributed, rank = _dist()
        if not self.store.is_done(rnd) and rank == 0:
            logger.info("building pseudo-labels of round %d", rnd)
            stats = self.builder(rnd, engine) or {}
            stats = {"round": rnd, **stats}
            self.store.finish(rnd, stats)
        if distributed:
            torch.distributed.barrier()
        if rank == 0:
            self.store.set_current(rnd)
        if distributed:
            torch.distributed.barrier()
        stats = self.store.stats(rnd)
        self.history[rnd] = stats
        engine.state.pseudo_round = rnd
        engine.state.pseudo_stats = stats
        for key, value in stats.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                engine.state.metrics[f"pseudo_{key}"] = float(value)
        for cb in self.callbacks:
            cb(rnd, stats, engine)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"rounds_done": self.store.rounds_done()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rounds live on disk; nothing to restore beyond checking they are still there."""
        missing = [r for r in state.get("rounds_done", []) if not self.store.is_done(r)]
        if missing:
            logger.warning("pseudo-label rounds %s recorded in the checkpoint are missing on disk; rebuilding", missing)
