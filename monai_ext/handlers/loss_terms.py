# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Epoch means of the named loss terms, published as engine metrics (StatsHandler / MLflow pick them up)."""

from __future__ import annotations

from collections import defaultdict


from ._ignite import Engine, Events

__all__ = ["LossTermsLogger"]


class LossTermsLogger:
    """Average the named loss terms of each iteration over the epoch into ``engine.state.metrics``.

    Terms are read from ``engine.state.loss_terms`` (set by :class:`~monai_ext.engines.GuardedTrainer`), else
    from a ``"terms"`` entry of the output (a dict, or the first dict of a decollated list).

    Args:
        prefix: metric name prefix, e.g. ``"train_"`` gives ``train_loss_seg``.
    """

    def __init__(self, prefix: str = "train_") -> None:
        self.prefix = prefix
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self._sums.clear()
        self._counts.clear()

    def _accumulate(self, engine: Engine) -> None:
        terms = getattr(engine.state, "loss_terms", None)
        if terms is None:
            out = engine.state.output
            out = out[0] if isinstance(out, (list, tuple)) and out else out
            terms = out.get("terms", {}) if isinstance(out, dict) else {}
        for name, value in terms.items():
            value = float(value)
            if value == value:  # skip NaN
                self._sums[name] += value
                self._counts[name] += 1

    def _publish(self, engine: Engine) -> None:
        for name, total in self._sums.items():
            engine.state.metrics[f"{self.prefix}{name}"] = total / max(self._counts[name], 1)
