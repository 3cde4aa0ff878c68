# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Pictures written during training: prediction-vs-truth overlays per validation, one plot per self-training round."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.utils import to_numpy

from ._ignite import Engine, Events

__all__ = ["ValidationOverlays", "RoundPlot"]

logger = logging.getLogger(__name__)


def _rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ValidationOverlays:
    """Overlay PNGs (ground-truth vs predicted instance contours) of the first ``max_images`` samples of each run
    of an evaluator: ``<output_dir>/val_epoch<E>_<id>.png``.

    Reads decollated outputs (``engine.state.output`` is a list of per-sample dicts after MONAI post-processing).

    Args:
        output_dir: destination folder.
        max_images: samples drawn per run.
        image_key / label_key / pred_key: keys of the image, ground truth and predicted instances.
        id_key: dotted key of the sample id (falls back to the sample index).
    """

    def __init__(
        self,
        output_dir: str | Path,
        max_images: int = 4,
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        id_key: str = "meta.id",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.max_images = int(max_images)
        self.image_key, self.label_key, self.pred_key, self.id_key = image_key, label_key, pred_key, id_key
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._count = 0

    def _sample_id(self, d: dict) -> str:
        cur: Any = d
        try:
            for part in self.id_key.split("."):
                cur = cur[part]
        except (KeyError, TypeError, IndexError):
            return str(self._count)
        return str(cur[0] if isinstance(cur, (list, tuple)) else cur)

    def __call__(self, engine: Engine) -> None:
        if self._count >= self.max_images or not _rank0():
            return
        from monai_ext.visualize import save_overlay

        outputs = engine.state.output
        outputs = outputs if isinstance(outputs, list) else [outputs]
        batch = engine.state.batch
        for i, out in enumerate(outputs):
            if self._count >= self.max_images or not isinstance(out, dict) or self.pred_key not in out:
                break
            image = out.get(self.image_key)
            if image is None and isinstance(batch, list) and i < len(batch) and self.image_key in batch[i]:
                image = batch[i][self.image_key]
            if image is None:
                return
            pred = to_numpy(out[self.pred_key])
            label = to_numpy(out[self.label_key]) if self.label_key in out else None
            if pred.ndim == to_numpy(image).ndim and pred.shape[0] > 1:  # raw network output, not instances
                return
            if "meta" in out:
                src = out
            elif isinstance(batch, list) and i < len(batch) and isinstance(batch[i], dict):
                src = batch[i]  # decollated batch
            else:
                src = {}
            sid = self._sample_id(src)
            path = self.output_dir / f"val_epoch{engine.state.epoch:03d}_{sid}.png"
            try:
                save_overlay(path, to_numpy(image), label=label, pred=pred)
            except Exception as exc:  # a picture must never stop training
                logger.warning("could not write overlay %s: %s", path, exc)
                return
            self._count += 1


class RoundPlot:
    """A :class:`~monai_ext.handlers.PseudoLabelRounds` callback drawing each round's statistics:
    ``<output_dir>/pseudo_round<R>.png`` with the histogram of instance scores (``stats["scores"]``), the
    threshold (``stats["threshold"]``) and every other scalar statistic as text.

    Args:
        output_dir: destination folder.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)

    def __call__(self, rnd: int, stats: dict[str, Any], engine: Any = None) -> Path | None:
        if not _rank0():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        scores = np.asarray(stats.get("scores", []), dtype=float)
        scalars = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if scores.size:
            ax.hist(scores, bins=30, color="#4c72b0", alpha=0.85)
            ax.set_xlabel("instance score")
            ax.set_ylabel("instances")
        thr = stats.get("threshold")
        if isinstance(thr, (int, float)):
            ax.axvline(float(thr), color="#c44e52", linestyle="--", label=f"threshold {float(thr):.3f}")
            ax.legend(loc="upper left")
        text = "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in scalars.items())
        ax.text(1.02, 1.0, text, transform=ax.transAxes, va="top", fontsize=8, family="monospace")
        ax.set_title(f"pseudo-labels, round {rnd}")
        fig.tight_layout()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"pseudo_round{int(rnd):02d}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
