# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Inference beyond what fits in memory: tiled instance segmentation with consistent ids across tiles, and sliding
windows that never pad an input smaller than the window."""

from __future__ import annotations

from .sliding import FittedSlidingWindowInferer
from .tiled import TiledResult, tiled_instance_segmentation

__all__ = ["FittedSlidingWindowInferer", "TiledResult", "tiled_instance_segmentation"]
