# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""COIN training: the student step with an EMA teacher, the flip-TTA sliding-window inferer, and the
pseudo-label builder that :class:`~monai_ext.handlers.PseudoLabelRounds` calls once per round.

Rounds (Step 3, recursive self-distillation):

- **round 0** (Steps 0-2): UCIS seeds -> pixel propagation (dataset foreground centroid, similarity, OT,
  optional CRF, watershed) -> refiner -> consistency scores -> per-image adaptive threshold -> pseudo-labels.
- **round r >= 1**: the EMA teacher predicts every training image (sliding window, flip TTA) -> edge-aware
  marker watershed -> refiner -> scores -> threshold -> newly accepted instances, merged with the previous
  round's accepted set (:func:`~monai_ext.pseudo.scoring.merge_with_previous`: an earlier instance survives
  unless a new accepted one covers more than ``max_overlap`` of it), so the confident set grows round by round.
  With ``epochs_per_round=1`` this is the paper's "refiner each epoch" schedule.

Each sample's round is written to the :class:`~monai_ext.pseudo.PseudoLabelStore` as ``instances`` (int32,
``-1`` = ignore), ``seg`` / ``edge`` (uint8 0/1/255), ``pred`` (the scored prediction), ``scores`` and, in round
0, ``seeds``; the builder returns per-round statistics (threshold, accepted / ignored counts, ``scores``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_ext.engines.base import GuardedTrainer
from monai_ext.errors import DataError, TrainingError
from monai_ext.inference.sliding import FittedSlidingWindowInferer
from monai_ext.losses.seg_edge import SegEdgeLoss
from monai_ext.postprocess.watershed import marker_watershed
from monai_ext.pseudo.propagation import CentroidAccumulator
from monai_ext.pseudo.scoring import (
    adaptive_threshold,
    build_pseudo_labels,
    consistency_scores,
    merge_with_previous,
)
from monai_ext.pseudo.store import PseudoLabelStore
from monai_ext.transforms.coin import COIN_WATERSHED, instances_to_targets
from monai_ext.utils import get_device, progress, to_numpy

__all__ = ["EMATeacher", "COINTrainer", "COINInferer", "COINPseudoLabelBuilder", "tta_probabilities"]

logger = logging.getLogger(__name__)


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


class EMATeacher(nn.Module):
    """Exponential moving average of a student's weights (COIN: decay 0.999), buffers copied.

    The effective decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates so that short
    runs are not dominated by the random initialisation. ``teacher.module`` is the averaged network; it is an
    ``nn.Module``, so it goes into checkpoints (``save_dict``) and can be the exported model.

    Args:
        student: the network to follow (DDP wrappers are unwrapped).
        decay: EMA decay.
        warmup: use the ramped decay.
    """

    def __init__(self, student: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        self.module = copy.deepcopy(_unwrap(student)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        n = int(self.num_updates)
        d = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        src = _unwrap(student).state_dict()
        for k, v in self.module.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(s)
        self.num_updates += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class COINTrainer(GuardedTrainer):
    """COIN student step: ``SegEdgeLoss(network(image), seg, edge)``, then the EMA teacher update.

    Args:
        teacher: optional :class:`EMATeacher` updated after every optimizer step.
        seg_key, edge_key: batch keys of the two targets ``(B, 1, H, W)`` in {0, 1, 255}.
        kwargs: :class:`~monai_ext.engines.GuardedTrainer` / MONAI ``SupervisedTrainer`` arguments
            (``loss_function`` defaults to :class:`~monai_ext.losses.seg_edge.SegEdgeLoss`).
    """

    def __init__(self, *args: Any, teacher: EMATeacher | None = None, seg_key: str = "seg", edge_key: str = "edge",
                 **kwargs: Any) -> None:
        if kwargs.get("loss_function") is None:
            kwargs["loss_function"] = SegEdgeLoss()
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.seg_key, self.edge_key = seg_key, edge_key

    def forward_loss(self, engine: GuardedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        dev = engine.state.device
        try:
            image = batchdata[Keys.IMAGE]
            seg, edge = batchdata[self.seg_key], batchdata[self.edge_key]
        except KeyError as exc:
            raise TrainingError(
                f"COIN batches need 'image', '{self.seg_key}' and '{self.edge_key}'; missing {exc}") from exc
        image = torch.as_tensor(image).to(dev, non_blocking=engine.non_blocking).float()
        seg = torch.as_tensor(seg).to(dev, non_blocking=engine.non_blocking)
        edge = torch.as_tensor(edge).to(dev, non_blocking=engine.non_blocking)
        pred = engine.network(image)
        loss = engine.loss_function(pred, seg, edge)
        terms = engine.loss_function.terms() if hasattr(engine.loss_function, "terms") else {}
        return {Keys.IMAGE: image, Keys.PRED: pred, Keys.LOSS: loss, "terms": terms}

    def after_step(self, engine: GuardedTrainer) -> None:
        if self.teacher is not None:
            self.teacher.update(engine.network)


def tta_probabilities(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, flips: Sequence[Sequence[int]]
                      ) -> torch.Tensor:
    """Softmax per head (``(B, 4, H, W)``: seg bg/fg, edge no/yes), averaged over the identity and ``flips``."""
    def probs(t: torch.Tensor) -> torch.Tensor:
        out = network(t)
        out = out["pred"] if isinstance(out, dict) else out
        return torch.cat([out[:, :2].float().softmax(1), out[:, 2:4].float().softmax(1)], 1)

    acc = probs(x)
    for dims in flips:
        acc = acc + probs(x.flip(list(dims))).flip(list(dims))
    return acc / (1 + len(flips))


class COINInferer(Inferer):
    """Sliding-window inference with flip test-time augmentation; returns per-head probabilities ``(B, 4, H, W)``.

    Memory is bounded by the window batch on the device; the stitched output (4 floats per pixel) lives on
    ``device`` (default: the input's; pass ``"cpu"`` for very large images on a GPU).

    Args:
        roi_size: window size; an image smaller than it along an axis is run whole along that axis, unpadded
            (the U-Net's InstanceNorm statistics would otherwise count the padding).
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        flip: average over horizontal and vertical flips.
        mode: window blending (``"gaussian"`` or ``"constant"``).
        device: where the stitched output is kept.
    """

    def __init__(self, roi_size: Sequence[int] | int = 256, sw_batch_size: int = 4, overlap: float = 0.25,
                 flip: bool = True, mode: str = "gaussian", device: str | torch.device | None = None) -> None:
        super().__init__()
        self.sw = FittedSlidingWindowInferer(roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode,
                                             device=device)
        self.flips: list[tuple[int, ...]] = [(-1,), (-2,)] if flip else []

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.sw(inputs, lambda x: tta_probabilities(network, x, self.flips))


class COINPseudoLabelBuilder:
    """Builds one round of COIN pseudo-labels for every training image (the ``builder`` of ``PseudoLabelRounds``).

    Ground-truth labels are never read: samples are loaded with ``load`` and only ``image`` and the sample id
    are used.

    Args:
        records: the training datalist (reader records).
        load: ``record -> sample`` (e.g. ``monai_ext.data.LoadRecordd(reader)``).
        store: the pseudo-label store.
        seeds: step-0 seed source, ``seeds(image, sample_id) -> (H, W)`` instances.
        propagation: step-1 :class:`~monai_ext.pseudo.propagation.PixelPropagation` (``None``: score the seeds
            directly, i.e. COIN without Step 1).
        refiner: ``refiner(image, pred) -> RefinedMasks`` (SAM or the offline refiner).
        teacher: the network that predicts in rounds >= 1 (the EMA teacher; its ``module`` is used).
        inferer: :class:`COINInferer` for rounds >= 1.
        threshold: ``"mean+std"`` (paper), ``"mean"`` or a fixed score.
        cap: upper bound of the adaptive threshold (0.9).
        merge_previous: grow the accepted set across rounds (see module docstring).
        max_overlap: overlap fraction above which an earlier accepted instance yields to a new one.
        keep_ignore: in rounds >= 1, a pixel that was ignore in the previous round stays ignore unless an instance
            is accepted on it now (Step 1's propagated foreground is computed once per image and is never turned
            into background by a later teacher that misses it).
        watershed: ``marker_watershed`` options for the teacher's instances (default ``COIN_WATERSHED``).
        min_area: refined masks smaller than this are never accepted.
        edge_mode: ``find_boundaries`` mode of the pseudo edge maps.
        edge_width: width of the pseudo edge band inside each instance (see
            :func:`~monai_ext.transforms.coin.instance_edges`; the paper's Canny edge is ~1 pixel).
        device: device of the teacher's inference.
        id_key: dotted key of the sample id.
        overlay_dir: folder for one overlay PNG per round (first ``overlays`` images), or ``None``.
        overlays: how many images get an overlay per round.
        max_logged_scores: cap on the ``scores`` list returned for histograms.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        load: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        store: PseudoLabelStore,
        seeds: Callable[..., np.ndarray],
        refiner: Callable[[Any, np.ndarray], Any],
        propagation: Any | None = None,
        teacher: nn.Module | None = None,
        inferer: Inferer | None = None,
        threshold: str | float = "mean+std",
        cap: float = 0.9,
        merge_previous: bool = True,
        max_overlap: float = 0.2,
        keep_ignore: bool = False,
        watershed: Mapping[str, Any] | None = None,
        min_area: int = 16,
        edge_mode: str = "inner",
        edge_width: int = 1,
        device: str | torch.device | None = None,
        id_key: str = "meta.id",
        overlay_dir: str | Path | None = None,
        overlays: int = 2,
        max_logged_scores: int = 5000,
    ) -> None:
        if not records:
            raise DataError("COIN pseudo-label builder: the training datalist is empty")
        self.records = list(records)
        self.load, self.store, self.seeds, self.refiner = load, store, seeds, refiner
        self.propagation, self.teacher = propagation, teacher
        self.inferer = inferer or COINInferer()
        self.threshold, self.cap = threshold, float(cap)
        self.merge_previous, self.max_overlap = bool(merge_previous), float(max_overlap)
        self.keep_ignore = bool(keep_ignore)
        self.watershed = dict(COIN_WATERSHED if watershed is None else watershed)
        self.min_area, self.edge_mode, self.edge_width = int(min_area), edge_mode, int(edge_width)
        self.device = get_device(device)
        self.id_key = id_key
        self.overlay_dir = Path(overlay_dir) if overlay_dir else None
        self.overlays, self.max_logged_scores = int(overlays), int(max_logged_scores)

    # -- helpers ----------------------------------------------------------------------------------
    def _sample(self, record: Mapping[str, Any]) -> tuple[np.ndarray, str]:
        d = self.load(record)
        cur: Any = d
        for part in self.id_key.split("."):
            cur = cur[part]
        image = to_numpy(d["image"]).astype(np.float32)
        if image.ndim != 3 or image.shape[0] != 3:
            raise DataError(f"COIN needs RGB images (3, H, W); sample {cur!r} has shape {image.shape}")
        return image, str(cur)

    @torch.no_grad()
    def predict_instances(self, image: np.ndarray) -> np.ndarray:
        """The teacher's instances of one image (sliding window + flip TTA + marker watershed)."""
        if self.teacher is None:
            raise TrainingError("COIN rounds >= 1 need a teacher network")
        net = _unwrap(self.teacher)  # the averaged network of an EMATeacher, or a DDP-wrapped module
        was_training = net.training
        net.eval()
        try:
            x = torch.as_tensor(image)[None].to(self.device)
            prob = self.inferer(x, net)[0].float().cpu().numpy()
        finally:
            net.train(was_training)
        return marker_watershed(prob[1], prob[3], **self.watershed)

    def score(self, image: np.ndarray, pred: np.ndarray) -> tuple[Any, np.ndarray, float]:
        refined = self.refiner(image, pred)
        scores = consistency_scores(pred, refined)
        return refined, scores, adaptive_threshold(scores, self.threshold, self.cap)

    def _overlay(self, rnd: int, k: int, sid: str, image: np.ndarray, inst: np.ndarray) -> None:
        if self.overlay_dir is None or k >= self.overlays:
            return
        try:
            from monai_ext.visualize import save_overlay

            save_overlay(self.overlay_dir / f"pseudo_round{rnd:02d}_{sid}.png", image, pred=inst)
        except Exception as exc:  # an overlay must never stop training
            logger.warning("could not write the pseudo-label overlay of %s: %s", sid, exc)

    # -- the round ------------------------------------------------------------------------------------
    def __call__(self, rnd: int, engine: Any = None) -> dict[str, Any]:
        start = time.time()
        seed_maps: dict[str, np.ndarray] = {}
        if rnd == 0 and self.propagation is not None:
            # pass 1: seeds of every image and the dataset-level foreground centroid (CAP); features are
            # recomputed in pass 2 instead of being stored (bounded memory)
            self.propagation.centroids = CentroidAccumulator()  # a rebuilt round 0 never double-counts
            for rec in progress(self.records, "COIN round 0: seeds + centroids"):
                image, sid = self._sample(rec)
                seed_maps[sid] = self.seeds(image, sid).astype(np.int32)
                self.propagation.centroids.add(self.propagation.extractor(image), seed_maps[sid], self.propagation.tile)
        thresholds, all_scores = [], []
        n_pred = n_acc = n_new = n_kept = 0
        ign_px = fg_px = tot_px = 0
        for k, rec in enumerate(progress(self.records, f"COIN round {rnd}: pseudo-labels")):
            image, sid = self._sample(rec)
            arrays: dict[str, np.ndarray] = {}
            if rnd == 0:
                seed = seed_maps.pop(sid) if sid in seed_maps else self.seeds(image, sid).astype(np.int32)
                pred = self.propagation(image, seed) if self.propagation is not None else seed
                arrays["seeds"] = seed
                previous = None
            else:
                pred = self.predict_instances(image)
                previous = self.store.load(sid, rnd - 1)["instances"] if self.merge_previous or self.keep_ignore \
                    else None
            refined, scores, thr = self.score(image, pred)
            pl = build_pseudo_labels(pred, refined, scores, thr, self.edge_mode, self.min_area, self.edge_width)
            inst = pl["instances"]
            new = int(inst.max(initial=0))
            if previous is not None and self.merge_previous:
                inst = merge_with_previous(inst, previous, self.max_overlap)
            if previous is not None and self.keep_ignore:
                inst[(previous < 0) & (inst == 0)] = -1
            seg, edge = instances_to_targets(inst, self.edge_mode, self.edge_width)
            self.store.write(rnd, sid, instances=inst, seg=seg, edge=edge, pred=pred.astype(np.int32),
                             scores=scores.astype(np.float32), **arrays)
            self._overlay(rnd, k, sid, image, inst)
            thresholds.append(thr)
            all_scores.extend(scores.tolist())
            n_pred += len(scores)
            total = int(inst.max(initial=0))
            n_acc += total
            n_new += new
            n_kept += total - new
            ign_px += int((inst < 0).sum())
            fg_px += int((inst > 0).sum())
            tot_px += inst.size
        scores_arr = np.asarray(all_scores, np.float64)
        stats = {
            "threshold": float(np.mean(thresholds)) if thresholds else 0.0,
            "n_pred": n_pred,
            "n_accepted": n_acc,
            "n_new_accepted": n_new,
            "n_kept_previous": n_kept,
            "n_ignored": n_pred - n_new,
            "accepted_fraction": n_new / max(n_pred, 1),
            "ignored_pixel_fraction": ign_px / max(tot_px, 1),
            "foreground_pixel_fraction": fg_px / max(tot_px, 1),
            "score_mean": float(scores_arr.mean()) if scores_arr.size else 0.0,
            "score_std": float(scores_arr.std()) if scores_arr.size else 0.0,
            "seconds": time.time() - start,
            "scores": scores_arr[: self.max_logged_scores].round(4).tolist(),
        }
        logger.info("COIN round %d: %d predicted, %d accepted (%d new, %d kept), mean threshold %.3f, %.1fs",
                    rnd, n_pred, n_acc, n_new, n_kept, stats["threshold"], stats["seconds"])
        return stats
