# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Dataset-level metrics of the CKS paper (LACSS ``metrics/ranked.py`` and ``metrics/dice.py``).

**Ranked AP** (:class:`RankedAP`, :func:`ranked_average_precision`, :func:`ranked_map`): predictions carry a
confidence score.  Per image, predictions are taken in decreasing score order and each is matched to the
still-unmatched GT instance of highest IoU if that IoU is ``> t`` (strict, as LACSS; ``strict=False`` gives
``>=``); it is then a true positive, otherwise a false positive.  The indicators of all images are pooled
and re-sorted by score; with ``P_k`` the precision of the top ``k`` predictions,
``AP_t = sum_k T_k P_k / C`` where ``C`` is the total number of GT instances.  No precision smoothing (LACSS
``coco_style=False``).  ``mAP`` is the mean over :data:`COCO_THRESHOLDS` (0.50:0.05:0.95).  Score ties are
broken stably (image order, then prediction id), LACSS leaves them to an unstable sort.  With label maps
predictions are disjoint, so for ``t >= 0.5`` (strict) every prediction has at most one candidate and the
greedy matching is computed without a loop; lower thresholds use the sequential greedy loop.

**Area-weighted instance Dice** (:func:`area_weighted_instance_dice`): see
:func:`monai_ext.metrics.instance_dice`; here the areas and Dice terms are pooled over all images, and
CKS uses only predictions with score ``>= 0.5`` (``min_score=0.5``).

**Scores** are given per image either as a mapping ``{prediction id: score}`` (keys may be strings, as in
JSON files) or as a 1-D array indexed by prediction id (``scores[id]``; entry 0 unused).  Every prediction
id present in the label image needs a finite score; scores of ids absent from the image are ignored.

Empty data: no GT instance in the whole dataset gives ``empty_value`` if there is no prediction either,
else 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from monai_ext.errors import DataError
from monai_ext.utils import to_numpy

from .instance import _instance_dice_terms
from .overlap import InstanceOverlap, compute_overlap

__all__ = [
    "COCO_THRESHOLDS",
    "RankedAP",
    "ranked_average_precision",
    "ranked_map",
    "ranked_indicators",
    "scores_for",
    "area_weighted_instance_dice",
]

#: IoU thresholds 0.50, 0.55, ..., 0.95 (exact decimal values, so ``IoU = 0.6`` compares as 0.6).
COCO_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


def scores_for(pred_ids: np.ndarray, scores: Any) -> np.ndarray:
    """Scores aligned with ``pred_ids`` from a ``{id: score}`` mapping or an array indexed by id.

    Raises:
        DataError: a prediction id without a score, a non-finite score, a malformed scores argument.
    """
    pred_ids = np.asarray(pred_ids)
    if isinstance(scores, Mapping):
        try:
            lookup = {int(k): float(v) for k, v in scores.items()}
        except (TypeError, ValueError) as exc:
            raise DataError(f"scores: keys must be prediction ids and values numbers ({exc})") from exc
        missing = [int(i) for i in pred_ids if int(i) not in lookup]
        if missing:
            more = " ..." if len(missing) > 10 else ""
            raise DataError(f"scores: no score for prediction id(s) {missing[:10]}{more}")
        out = np.array([lookup[int(i)] for i in pred_ids], dtype=np.float64)
    else:
        try:
            arr = np.asarray(to_numpy(scores), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"scores: expected a mapping or a 1-D array indexed by id ({exc})") from exc
        if arr.ndim != 1:
            raise DataError(f"scores: an array of scores must be 1-D, indexed by prediction id; got shape {arr.shape}")
        if pred_ids.size and int(pred_ids.max()) >= arr.size:
            raise DataError(f"scores: array of length {arr.size} has no entry for prediction id {int(pred_ids.max())}")
        out = arr[pred_ids.astype(np.intp)]
    if not np.isfinite(out).all():
        raise DataError("scores: every prediction score must be finite")
    return out


def ranked_indicators(
    ov: InstanceOverlap, scores: np.ndarray, thresholds: Sequence[float], strict: bool = True
) -> np.ndarray:
    """``(M, T)`` true-positive indicators of one image's predictions under the CKS greedy matching.

    Args:
        ov: the image's overlap.
        scores: ``(M,)`` scores aligned with ``ov.pred_ids``.
        thresholds: IoU thresholds.
        strict: match at ``IoU > t`` (CKS) rather than ``>= t``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ind = np.zeros((ov.n_pred, len(thresholds)), dtype=bool)
    iou = ov.pair_iou
    for k, t in enumerate(thresholds):
        edges = np.flatnonzero(iou > t if strict else iou >= t)
        if edges.size == 0:
            continue
        a, b = ov.pair_gt[edges], ov.pair_pred[edges]
        if np.bincount(a).max() <= 1 and np.bincount(b).max() <= 1:
            ind[b, k] = True  # one candidate per prediction and per GT: greedy order is irrelevant
            continue
        # sequential greedy: predictions by decreasing score (ties: lower index); each takes its free GT of
        # highest IoU (ties: lower GT index).  Edges sorted that way; the first free edge of a prediction wins.
        e_iou = iou[edges]
        order = np.lexsort((a, -e_iou, b, -scores[b]))
        matched_gt = np.zeros(ov.n_gt, dtype=bool)
        done_pred = np.zeros(ov.n_pred, dtype=bool)
        for j, g in zip(b[order].tolist(), a[order].tolist()):
            if done_pred[j] or matched_gt[g]:
                continue
            done_pred[j] = matched_gt[g] = True
            ind[j, k] = True
    return ind


class RankedAP:
    """Accumulates per-image ranked matches and computes the pooled CKS AP (see the module docstring).

    Args:
        thresholds: IoU thresholds (default :data:`COCO_THRESHOLDS`).
        strict: ``IoU > t`` (CKS) or ``IoU >= t``.
        min_score: drop predictions with a lower score before matching (CKS uses 0.2).
        empty_value: AP when the dataset has neither GT nor predictions.
    """

    def __init__(
        self,
        thresholds: float | Sequence[float] = COCO_THRESHOLDS,
        *,
        strict: bool = True,
        min_score: float | None = None,
        empty_value: float = 1.0,
    ) -> None:
        thr = [thresholds] if np.isscalar(thresholds) else list(thresholds)  # type: ignore[list-item]
        if not thr or not all(0.0 <= float(t) <= 1.0 for t in thr):
            raise ValueError(f"thresholds must be a non-empty list of IoU values in [0, 1], got {thresholds}")
        self.thresholds = tuple(round(float(t), 10) for t in thr)  # np.arange artefacts, see COCO_THRESHOLDS
        self.strict = bool(strict)
        self.min_score = None if min_score is None else float(min_score)
        self.empty_value = float(empty_value)
        self.reset()

    def reset(self) -> None:
        """Forget all images."""
        self._scores: list[np.ndarray] = []
        self._indicators: list[np.ndarray] = []
        self.n_gt = 0

    def update(self, gt: Any, pred: Any = None, scores: Any = None, **overlap_kwargs: Any) -> np.ndarray:
        """Add one image: ``update(gt, pred, scores)`` or ``update(overlap, scores=scores)``.

        Returns:
            the image's ``(M, T)`` indicators (after the ``min_score`` filter).
        """
        if isinstance(gt, InstanceOverlap):
            if pred is not None and scores is None:
                pred, scores = None, pred
            if pred is not None:
                raise TypeError("pass either an InstanceOverlap and scores, or gt, pred and scores")
            ov = gt
        else:
            if pred is None:
                raise TypeError("pred is required when gt is a label image")
            ov = compute_overlap(gt, pred, **overlap_kwargs)
        if scores is None:
            raise TypeError("ranked AP needs a score per prediction (mapping id -> score or array indexed by id)")
        s = scores_for(ov.pred_ids, scores)
        if self.min_score is not None:
            keep = s >= self.min_score
            ov, s = ov.select_pred(keep), s[keep]
        ind = ranked_indicators(ov, s, self.thresholds, self.strict)
        self._scores.append(s)
        self._indicators.append(ind)
        self.n_gt += ov.n_gt
        return ind

    def compute(self) -> np.ndarray:
        """``(T,)`` AP per threshold, pooled over every image added so far."""
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        ind = np.concatenate(self._indicators) if self._indicators else np.zeros((0, len(self.thresholds)), bool)
        if self.n_gt == 0:
            return np.full(len(self.thresholds), self.empty_value if scores.size == 0 else 0.0)
        order = np.argsort(-scores, kind="stable")
        ind = ind[order].astype(np.float64)
        precision = np.cumsum(ind, axis=0) / np.arange(1, ind.shape[0] + 1)[:, None]
        return (precision * ind).sum(axis=0) / self.n_gt

    def compute_map(self) -> float:
        """Mean of :meth:`compute` over the thresholds."""
        return float(np.mean(self.compute()))


def _ranked_items(items: Iterable[Any]) -> Iterable[tuple[Any, Any, Any]]:
    for it in items:
        if isinstance(it, InstanceOverlap):
            yield it, None, None
        elif isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[0], InstanceOverlap):
            yield it[0], None, it[1]
        elif isinstance(it, (tuple, list)) and len(it) in (2, 3):
            yield it[0], it[1], (it[2] if len(it) == 3 else None)
        else:
            raise TypeError(
                "each item must be (gt, pred, scores), (overlap, scores), (gt, pred) or an InstanceOverlap; "
                f"got {type(it).__name__}"
            )


def ranked_average_precision(
    items: Iterable[Any],
    thresholds: float | Sequence[float] = COCO_THRESHOLDS,
    *,
    strict: bool = True,
    min_score: float | None = None,
    empty_value: float = 1.0,
    **overlap_kwargs: Any,
) -> np.ndarray:
    """CKS ranked AP per threshold, pooled over images.

    Args:
        items: per image ``(gt, pred, scores)`` or ``(overlap, scores)``.
        thresholds: IoU thresholds (default 0.50:0.05:0.95).
        strict: ``IoU > t`` (CKS) or ``>= t``.
        min_score: keep predictions with ``score >= min_score`` only.
        empty_value: AP for a dataset with neither GT nor predictions.
        overlap_kwargs: :func:`compute_overlap` options.

    Returns:
        ``(T,)`` AP values aligned with ``thresholds``.
    """
    acc = RankedAP(thresholds, strict=strict, min_score=min_score, empty_value=empty_value)
    for gt, pred, scores in _ranked_items(items):
        if isinstance(gt, InstanceOverlap):
            acc.update(gt, scores=scores)
        else:
            acc.update(gt, pred, scores, **overlap_kwargs)
    return acc.compute()


def ranked_map(items: Iterable[Any], thresholds: Sequence[float] = COCO_THRESHOLDS, **kwargs: Any) -> float:
    """CKS mAP: mean of :func:`ranked_average_precision` over ``thresholds`` (default 0.50:0.05:0.95)."""
    return float(np.mean(ranked_average_precision(items, thresholds, **kwargs)))


def area_weighted_instance_dice(
    items: Iterable[Any],
    *,
    min_score: float | None = None,
    empty_value: float = 1.0,
    **overlap_kwargs: Any,
) -> float:
    """CKS area-weighted instance Dice with areas pooled over all images.

    ``Dice = (sum_j |S_j| D_j / sum_j |S_j| + sum_g |G_g| D_g / sum_g |G_g|) / 2`` over every prediction ``j``
    and GT ``g`` of every image, where ``D`` is the Dice with the counterpart of largest intersection (0 if
    none).  A half with no object counts 0; no object at all gives ``empty_value``.

    Args:
        items: per image ``(gt, pred)``, ``(gt, pred, scores)``, an overlap or ``(overlap, scores)``.
        min_score: keep predictions with ``score >= min_score`` (CKS: 0.5); needs scores.
        empty_value: value when no image has any instance.
        overlap_kwargs: :func:`compute_overlap` options.
    """
    total = np.zeros(4)
    for gt, pred, scores in _ranked_items(items):
        ov = gt if isinstance(gt, InstanceOverlap) else compute_overlap(gt, pred, **overlap_kwargs)
        if min_score is not None:
            if scores is None:
                raise TypeError("min_score needs scores for every image")
            ov = ov.select_pred(scores_for(ov.pred_ids, scores) >= float(min_score))
        total += _instance_dice_terms(ov)
    pd, pa, gd, ga = total
    if pa == 0 and ga == 0:
        return float(empty_value)
    return 0.5 * ((pd / pa if pa > 0 else 0.0) + (gd / ga if ga > 0 else 0.0))

