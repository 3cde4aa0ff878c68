# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Inference beyond what fits in memory: tiled instance segmentation with consistent ids across tiles."""

from __future__ import annotations

from .tiled import TiledResult, tiled_instance_segmentation

__all__ = ["TiledResult", "tiled_instance_segmentation"]
