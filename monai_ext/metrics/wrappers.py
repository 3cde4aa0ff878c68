# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""MONAI ``CumulativeIterationMetric`` and Ignite handler around :mod:`monai_ext.metrics.instance`.

The metric buffers per-image *sufficient statistics* (not values), so one buffer gives both the mean of
per-image values and the pooled (dataset) value, and distributed gathering works as for any MONAI metric.

Bundle config (``evaluate.json``)::

    "key_metric": {"val_aji": {
        "_target_": "monai_ext.metrics.InstanceSegMetricHandler",
        "metric_name": "aji",
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
    "additional_metrics": {"val_all": {
        "_target_": "monai_ext.metrics.InstanceSegMetricHandler",
        "metric_name": ["pq", "dq", "sq", "aji_plus", "ap50"], "reduction": "pooled",
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

A handler with several metric names writes each one to ``engine.state.metrics[<metric name>]`` (Ignite
spreads a dict result), so its own name must differ from the metric names; ``key_metric`` needs a single
name (a scalar to compare).  ``engine.state.metric_details[<handler name>]`` holds the per-image values
``(images, metrics)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.metrics.metric import IterationMetric

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

from .instance import _DEFAULT_AP_THRESHOLDS, InstanceMetricSpec, _nanmean_rows
from .overlap import compute_overlap

__all__ = ["InstanceSegMetric", "InstanceSegMetricHandler"]

_REDUCTIONS = ("mean", "pooled", "none")


class InstanceSegMetric(CumulativeIterationMetric):
    """Instance segmentation metrics of batches of instance label maps, accumulated over iterations.

    Inputs ``y_pred`` and ``y`` are ``(B, 1, H, W[, D])`` integer instance label tensors (0 = background),
    or lists of ``(1, H, W[, D])`` tensors.  Calling the metric returns the per-image values ``(B, K)``
    (``K = len(metric_names)``) and buffers per-image statistics.

    Args:
        metric_name: one name or a list (see :data:`monai_ext.metrics.METRIC_NAMES`, plus ``ap<t>``).
        reduction: ``"mean"`` (mean of per-image values, ``nan`` skipped), ``"pooled"`` (statistics summed
            over all images, metric computed once) or ``"none"`` (per-image values).
        match_iou, ap_thresholds, ap_strict, empty_value: see :class:`~monai_ext.metrics.InstanceMetricSpec`.
        ignore_negative: drop negative (ignore) pixels instead of raising.
        allow_integral_float: accept float label tensors holding whole numbers (e.g. labels loaded as
            float32 by ``LoadImaged``); otherwise float labels raise :class:`~monai_ext.errors.DataError`.
        connectivity: adjacency neighbourhood of ``aji_adjacent`` / ``aji_non_adjacent``.
    """

    def __init__(
        self,
        metric_name: str | Sequence[str] = "aji",
        reduction: str = "mean",
        *,
        match_iou: float = 0.5,
        ap_thresholds: float | Sequence[float] = _DEFAULT_AP_THRESHOLDS,
        ap_strict: bool = False,
        empty_value: float = 1.0,
        ignore_negative: bool = False,
        allow_integral_float: bool = False,
        connectivity: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = InstanceMetricSpec(
            metric_name, match_iou=match_iou, ap_thresholds=ap_thresholds, ap_strict=ap_strict, empty_value=empty_value
        )
        self.reduction = self._check_reduction(reduction)
        self.overlap_kwargs = {
            "ignore_negative": ignore_negative,
            "allow_integral_float": allow_integral_float,
            "adjacency": self.spec.needs_adjacency,
            "connectivity": connectivity,
        }

    @staticmethod
    def _check_reduction(reduction: Any) -> str:
        red = str(getattr(reduction, "value", reduction)).lower()
        if red not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        return red

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Output names, in column order."""
        return self.spec.keys

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Per-image sufficient statistics ``(B, S)`` (float64) of a batch."""
        if y is None:
            raise ValueError("InstanceSegMetric needs the ground truth y")
        pred, gt = to_numpy(y_pred), to_numpy(y)
        if pred.shape != gt.shape:
            raise DataError(f"y_pred and y must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
        if pred.ndim < 3 or pred.shape[1] != 1:
            raise DataError(
                "expected (B, 1, H, W[, D]) instance label maps (one channel of instance ids), "
                f"got shape {tuple(pred.shape)}"
            )
        rows = [
            self.spec.statistics(compute_overlap(gt[b, 0], pred[b, 0], **self.overlap_kwargs))
            for b in range(pred.shape[0])
        ]
        stats = np.stack(rows) if rows else np.zeros((0, self.spec.size))
        return torch.as_tensor(stats, dtype=torch.float64)

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Buffer the batch's statistics; return its per-image values ``(B, K)``."""
        stats = IterationMetric.__call__(self, y_pred, y, **kwargs)
        assert isinstance(stats, torch.Tensor)
        self.extend(stats)
        return torch.as_tensor(self.spec.finalize(stats.numpy()), dtype=torch.float64)

    def get_statistics(self) -> torch.Tensor | None:
        """Buffered per-image statistics ``(N_images, S)`` (gathered across ranks), or ``None``."""
        return super().get_buffer()

    def get_buffer(self) -> torch.Tensor | None:  # type: ignore[override]
        """Per-image metric values ``(N_images, K)``; what MONAI handlers save as ``metric_details``."""
        stats = self.get_statistics()
        if stats is None:
            return None
        return torch.as_tensor(self.spec.finalize(stats.cpu().numpy()), dtype=torch.float64)

    def aggregate(  # type: ignore[override]
        self, reduction: str | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Reduce the buffer: a scalar tensor per metric (``(N_images,)`` for ``"none"``).

        Returns a tensor for a single metric name, else ``{name: tensor}``.

        Raises:
            ValueError: nothing has been buffered yet.
        """
        red = self.reduction if reduction is None else self._check_reduction(reduction)
        stats = self.get_statistics()
        if stats is None or stats.shape[0] == 0:
            raise ValueError("InstanceSegMetric.aggregate: no images yet; call the metric on a batch first")
        s = stats.cpu().numpy()
        if red == "pooled":
            values = self.spec.finalize(s.sum(axis=0))
        elif red == "mean":
            values = _nanmean_rows(self.spec.finalize(s))
        else:
            values = self.spec.finalize(s)
        out = torch.as_tensor(values, dtype=torch.float64)
        if len(self.spec.keys) == 1:
            return out[..., 0]
        return {k: out[..., i] for i, k in enumerate(self.spec.keys)}


class InstanceSegMetricHandler(IgniteMetricHandler):
    """Ignite handler of :class:`InstanceSegMetric` for bundle ``key_metric`` / ``additional_metrics``.

    Args:
        metric_name: one name (``key_metric``) or several (``additional_metrics``; each lands in
            ``engine.state.metrics`` under its own name).
        reduction: ``"mean"`` (per image), ``"pooled"`` or ``"none"``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store per-image values in ``engine.state.metric_details[name]``.
        match_iou, ap_thresholds, ap_strict, empty_value, ignore_negative, allow_integral_float,
        connectivity: see :class:`InstanceSegMetric`.
    """

    def __init__(
        self,
        metric_name: str | Sequence[str] = "aji",
        reduction: str = "mean",
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        *,
        match_iou: float = 0.5,
        ap_thresholds: float | Sequence[float] = _DEFAULT_AP_THRESHOLDS,
        ap_strict: bool = False,
        empty_value: float = 1.0,
        ignore_negative: bool = False,
        allow_integral_float: bool = False,
        connectivity: int | None = None,
    ) -> None:
        metric_fn = InstanceSegMetric(
            metric_name,
            reduction,
            match_iou=match_iou,
            ap_thresholds=ap_thresholds,
            ap_strict=ap_strict,
            empty_value=empty_value,
            ignore_negative=ignore_negative,
            allow_integral_float=allow_integral_float,
            connectivity=connectivity,
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

    def compute(self) -> Any:
        """Python floats (or ``{name: float}``) so that ``engine.state.metrics`` holds plain numbers."""
        result = super().compute()
        if isinstance(result, dict):
            return {k: (v.tolist() if v.ndim else float(v)) for k, v in result.items()}
        if isinstance(result, torch.Tensor):
            return result.tolist()
        return float(result)
