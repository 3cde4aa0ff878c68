# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Ignite handlers: checkpoints and resume, determinism, loss-term logging, self-training rounds."""

from __future__ import annotations

from .checkpoint import TrainingCheckpoint, unwrap_module
from .determinism import EpochSeeder
from .loss_terms import LossTermsLogger
from .metrics_json import MetricsJsonWriter
from .pseudo_rounds import PseudoLabelRounds
from .timing import ThroughputTimer
from .visual import RoundPlot, ValidationOverlays

__all__ = ["TrainingCheckpoint", "unwrap_module", "EpochSeeder", "LossTermsLogger", "MetricsJsonWriter", "PseudoLabelRounds", "ThroughputTimer", "ValidationOverlays", "RoundPlot"]
