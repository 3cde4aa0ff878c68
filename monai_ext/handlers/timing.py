# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Per-iteration wall time, throughput and peak memory of an engine, written to JSON (speed benchmarks)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from monai_ext.utils import atomic_write_bytes

from ._ignite import Engine, Events

__all__ = ["ThroughputTimer"]


def _batch_size(batch) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.ndim > 0:
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0]) if isinstance(batch[0], dict) else len(batch)
    return 1


class ThroughputTimer:
    """Time every iteration from batch fetch to the end of its handlers (postprocessing included).

    On ``COMPLETED`` writes ``{"iterations", "samples", "median_s", "p25_s", "p75_s", "mean_s",
    "samples_per_s", "peak_rss_mb", "peak_cuda_mb"}`` to ``output_path``; the first ``skip_first``
    iterations (warm-up) are left out of the statistics. Attach it last so that it times the other handlers.

    Args:
        output_path: JSON file to write.
        skip_first: warm-up iterations excluded.
    """

    def __init__(self, output_path: str | Path, skip_first: int = 1) -> None:
        self.output_path = Path(output_path)
        self.skip_first = int(skip_first)
        self.times: list[float] = []
        self.sizes: list[int] = []
        self._t0 = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _start(self, engine: Engine) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def _stop(self, engine: Engine) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)
        self.sizes.append(_batch_size(engine.state.batch))

    def summary(self) -> dict[str, float]:
        times = np.asarray(self.times[self.skip_first:] or self.times, dtype=float)
        sizes = np.asarray(self.sizes[self.skip_first:] or self.sizes, dtype=float)
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_mb = rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20
        out = {
            "iterations": int(times.size),
            "samples": int(sizes.sum()),
            "median_s": float(np.median(times)) if times.size else float("nan"),
            "p25_s": float(np.percentile(times, 25)) if times.size else float("nan"),
            "p75_s": float(np.percentile(times, 75)) if times.size else float("nan"),
            "mean_s": float(times.mean()) if times.size else float("nan"),
            "samples_per_s": float(sizes.sum() / times.sum()) if times.size and times.sum() > 0 else float("nan"),
            "peak_rss_mb": float(rss_mb),
            "peak_cuda_mb": float(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else 0.0,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        }
        return out

    def _write(self, engine: Engine) -> None:
        atomic_write_bytes(self.output_path, json.dumps(self.summary(), indent=2).encode())
