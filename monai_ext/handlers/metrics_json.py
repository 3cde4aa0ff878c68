# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Write an engine's final metrics to a JSON file (machine-readable evaluation output)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from monai_ext.utils import atomic_write_bytes

from ._ignite import Engine, Events

__all__ = ["MetricsJsonWriter"]


class MetricsJsonWriter:
    """On ``COMPLETED`` write ``engine.state.metrics`` (scalars) to ``<output_dir>/<filename>``.

    Args:
        output_dir: destination folder.
        filename: file name.
        extra: constant entries added to the file (e.g. the bundle name and dataset).
    """

    def __init__(self, output_dir: str | Path, filename: str = "metrics.json", extra: dict[str, Any] | None = None) -> None:
        self.path = Path(output_dir) / filename
        self.extra = dict(extra or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out: dict[str, Any] = dict(self.extra)
        for key, value in engine.state.metrics.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            out[key] = None if math.isnan(value) else value
        atomic_write_bytes(self.path, json.dumps(out, indent=2, sort_keys=True).encode())
