# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Pseudo-label machinery: storage per round, refiners, confidence scoring, instance-aware selection."""

from __future__ import annotations

from .store import PseudoLabelStore

__all__ = ["PseudoLabelStore"]
