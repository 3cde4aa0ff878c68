# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Trainers where one model and one loss are not enough."""

from __future__ import annotations

from .base import GuardedTrainer, batch_ids

__all__ = ["GuardedTrainer", "batch_ids"]
