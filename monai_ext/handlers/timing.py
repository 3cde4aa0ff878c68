# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Per-iteration wall time, throughput and peak memory of an engine, written to JSON (speed benchmarks)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from monai_ext.utils import atomic_write_bytes

from ._ignite import Engine, Events

__all__ = ["ThroughputTimer", "reset_peak_rss"]


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; NaN where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs``) and return the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _batch_size(batch) -> int:
    """Samples in ``batch``: a collated dict (first axis of its first tensor), a decollated list of per-sample dicts
    (MONAI engines decollate before ``ITERATION_COMPLETED``: its length, not the first axis of a sample's image,
    which would count an RGB image as 3 samples) or a tuple of tensors."""
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.ndim > 0:
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        if isinstance(batch[0], dict):
            return len(batch)
        return int(batch[0].shape[0]) if isinstance(batch[0], torch.Tensor) and batch[0].ndim > 0 else len(batch)
    return 1


class ThroughputTimer:
    """Time every iteration from batch fetch to the end of its handlers (postprocessing included).

    On ``COMPLETED`` writes ``{"iterations", "samples", "median_s", "p25_s", "p75_s", "mean_s",
    "samples_per_s", "baseline_rss_mb", "peak_rss_mb", "peak_cuda_mb"}`` to ``output_path``; the first
    ``skip_first`` iterations (warm-up) are left out of the statistics. The peak-RSS counter is reset when the
    engine starts (after imports and model construction), so ``peak_rss_mb - baseline_rss_mb`` is the memory
    the run itself needed. Attach it last so that it times the other handlers.

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
        self.baseline_rss_mb = float("nan")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.baseline_rss_mb = reset_peak_rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

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
        out = {
            "iterations": int(times.size),
            "samples": int(sizes.sum()),
            "median_s": float(np.median(times)) if times.size else float("nan"),
            "p25_s": float(np.percentile(times, 25)) if times.size else float("nan"),
            "p75_s": float(np.percentile(times, 75)) if times.size else float("nan"),
            "mean_s": float(times.mean()) if times.size else float("nan"),
            "samples_per_s": float(sizes.sum() / times.sum()) if times.size and times.sum() > 0 else float("nan"),
            "baseline_rss_mb": float(self.baseline_rss_mb),
            "peak_rss_mb": _status_mb("VmHWM"),
            "peak_cuda_mb": float(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else 0.0,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        }
        return out

    def _write(self, engine: Engine) -> None:
        atomic_write_bytes(self.output_path, json.dumps(self.summary(), indent=2).encode())
