# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Weakly supervised domain adaptation for EM mitochondria (arXiv 2510.16450): the round schedule, the
source + target dataset, the multi-task trainer, the IPL pseudo-label builder and the slice / volume inferer.

Rounds (driven by :class:`~monai_ext.handlers.PseudoLabelRounds`; each round = ``epochs_per_round`` epochs):

- ``warmup`` rounds: source supervision (CE + detection) and target point supervision of the detection head
  (teacher-free targets: Gaussians at the points, prior shapes, ignore zones). They stand in for the paper's
  source-pretrained initialisation.
- ``stage1`` rounds, ratios ``r = 0, 0.15, ..., 0.6``: the teacher (the network at the end of the previous round)
  builds instance-aware pseudo-labels with ``tau = 0.9`` (:func:`~monai_ext.pseudo.ipl.select_instances`); the
  target detection head learns the cross-taught targets (pseudo-instance centroids); source CE + detection
  continue; no target segmentation loss (as in the authors' code).
- ``stage2`` rounds, ``r = 0.35, 0.70``, ``tau = 0.8``: target cross-entropy on the pseudo-labels + target
  detection; source losses off by default (the code forwards the source batch without a loss).
- The class-focused contrastive loss (target anchors, source + target prototypes) is added in every adaptation
  stage with a per-stage weight.

Modes: ``wda`` (points), ``uda`` (no points: pseudo-points = the top detection peaks), ``source_only`` (the lower
bound: source losses only, same number of epochs) and ``supervised`` (the upper bound: target ground truth).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.inferers import Inferer
from monai.transforms import Randomizable
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from monai_ext.engines.base import GuardedTrainer
from monai_ext.errors import DataError, TrainingError
from monai_ext.inference.sliding import FittedSlidingWindowInferer
from monai_ext.losses.contrastive import ClassFocusedContrastiveLoss
from monai_ext.losses.em import IgnoreCrossEntropyLoss, WeightedHeatmapLoss
from monai_ext.pseudo.ipl import IPLResult, merge_stats, point_targets, pseudo_points_from_peaks, select_instances, \
    supervised_targets
from monai_ext.pseudo.store import PseudoLabelStore
from monai_ext.utils import progress, to_numpy

__all__ = [
    "MODES",
    "STAGES",
    "DEFAULT_LOSS_WEIGHTS",
    "WDASchedule",
    "SourceTargetDataset",
    "tta_maps",
    "EMInferer",
    "IPLBuilder",
    "WDATrainer",
    "source_records",
    "target_records",
    "labelled_records",
]

logger = logging.getLogger(__name__)

MODES = ("wda", "uda", "source_only", "supervised")
STAGES = ("warmup", "stage1", "stage2", "source", "supervised")
TERMS = ("src_ce", "src_det", "tgt_ce", "tgt_det", "contrast")

#: loss weights per stage (see the bundle README for how they map onto the authors' code).
DEFAULT_LOSS_WEIGHTS: dict[str, dict[str, float]] = {
    "warmup": {"src_ce": 1.0, "src_det": 10.0, "tgt_ce": 0.0, "tgt_det": 2.0, "contrast": 0.0},
    "stage1": {"src_ce": 1.0, "src_det": 10.0, "tgt_ce": 0.0, "tgt_det": 2.0, "contrast": 0.1},
    "stage2": {"src_ce": 0.0, "src_det": 0.0, "tgt_ce": 1.0, "tgt_det": 2.0, "contrast": 0.005},
    "source": {"src_ce": 1.0, "src_det": 10.0, "tgt_ce": 0.0, "tgt_det": 0.0, "contrast": 0.0},
    "supervised": {"src_ce": 0.0, "src_det": 0.0, "tgt_ce": 1.0, "tgt_det": 10.0, "contrast": 0.0},
}


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


# ------------------------------------------------------------------------------------------------ schedule
class WDASchedule:
    """Round index -> stage, selection ratio ``r`` and confidence threshold ``tau``.

    Args:
        mode: ``"wda"``, ``"uda"``, ``"source_only"`` or ``"supervised"``.
        warmup_rounds: rounds of source + point supervision before the first teacher (>= 1).
        stage1_ratios: ``r`` of each stage-1 round (paper code: 0, 0.15, 0.3, 0.45, 0.6).
        stage2_ratios: ``r`` of each stage-2 round (paper code: 0.35, 0.7).
        stage1_tau, stage2_tau: teacher confidence thresholds (paper code: 0.9, 0.8).
        uda_point_ratio: UDA only: share of the estimated count turned into pseudo-points.

    ``source_only`` and ``supervised`` keep the same number of rounds (and so of epochs) as the adaptive modes, so
    every mode trains equally long.
    """

    def __init__(self, mode: str = "wda", warmup_rounds: int = 1, stage1_ratios: Sequence[float] = (0.0, 0.15, 0.3, 0.45, 0.6),
                 stage2_ratios: Sequence[float] = (0.35, 0.7), stage1_tau: float = 0.9, stage2_tau: float = 0.8,
                 uda_point_ratio: float = 0.15) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if warmup_rounds < 1:
            raise ValueError("warmup_rounds must be >= 1 (round 0 has no teacher)")
        for name, tau in (("stage1_tau", stage1_tau), ("stage2_tau", stage2_tau)):
            if not 0.5 <= tau < 1.0:
                raise ValueError(f"{name} must be in [0.5, 1), got {tau}")
        ratios = list(stage1_ratios) + list(stage2_ratios)
        if any(r < 0 for r in ratios):
            raise ValueError(f"ratios must be >= 0, got {ratios}")
        self.mode = mode
        self.warmup_rounds = int(warmup_rounds)
        self.stage1_ratios = [float(r) for r in stage1_ratios]
        self.stage2_ratios = [float(r) for r in stage2_ratios]
        self.stage1_tau, self.stage2_tau = float(stage1_tau), float(stage2_tau)
        self.uda_point_ratio = float(uda_point_ratio)

    @property
    def num_rounds(self) -> int:
        return self.warmup_rounds + len(self.stage1_ratios) + len(self.stage2_ratios)

    def _clamp(self, rnd: int) -> int:
        return min(max(int(rnd), 0), self.num_rounds - 1)

    def stage(self, rnd: int) -> str:
        """``warmup``, ``stage1``, ``stage2`` (adaptive modes), ``source`` or ``supervised``."""
        if self.mode == "source_only":
            return "source"
        if self.mode == "supervised":
            return "supervised"
        r = self._clamp(rnd)
        if r < self.warmup_rounds:
            return "warmup"
        return "stage1" if r < self.warmup_rounds + len(self.stage1_ratios) else "stage2"

    def ratio(self, rnd: int) -> float:
        r = self._clamp(rnd) - self.warmup_rounds
        if r < 0:
            return 0.0
        if r < len(self.stage1_ratios):
            return self.stage1_ratios[r]
        return self.stage2_ratios[r - len(self.stage1_ratios)]

    def tau(self, rnd: int) -> float:
        return self.stage2_tau if self.stage(rnd) == "stage2" else self.stage1_tau

    def describe(self) -> list[dict[str, Any]]:
        """One dict per round (stage, r, tau), for logs and the README."""
        return [{"round": r, "stage": self.stage(r), "ratio": self.ratio(r), "tau": self.tau(r)} for r in range(self.num_rounds)]


# ------------------------------------------------------------------------------------------------ data
def _datalist(reader: Any) -> list[dict[str, Any]]:
    return list(reader.datalist())


def source_records(reader: Any) -> list[dict[str, Any]]:
    """Labelled source-domain records: those of the ``train`` split (or without a split), else every labelled one."""
    labelled = [r for r in _datalist(reader) if r.get("label")]
    if not labelled:
        raise DataError("the source domain has no labelled volumes (Lucchi: training.tif + training_groundtruth.tif)",
                        str(getattr(reader, "root", "")))
    train = [r for r in labelled if r.get("split") in ("train", None)]
    return train or labelled


def target_records(reader: Any, split: str = "train") -> list[dict[str, Any]]:
    """Target-domain records of ``split`` (``"train"`` also takes records without a split)."""
    allowed = (split, None) if split == "train" else (split,)
    out = [r for r in _datalist(reader) if r.get("split") in allowed]
    if not out:
        have = sorted({str(r.get("split")) for r in _datalist(reader)})
        raise DataError(f"the target domain has no {split!r} records (splits found: {', '.join(have)})",
                        str(getattr(reader, "root", "")))
    return out


def labelled_records(reader: Any, split: str) -> list[dict[str, Any]]:
    """Records of ``split`` that have labels (``[]`` when there are none, e.g. no labelled target validation)."""
    return [r for r in _datalist(reader) if r.get("split") == split and r.get("label")]


class SourceTargetDataset(Randomizable, torch.utils.data.Dataset):
    """Map-style dataset whose item ``i`` is ``{"source": source[j], "target": target[i mod N_t]}``, ``j`` random.

    One training step then draws one source and one target batch (the default collate handles the nested dicts),
    and MONAI's / torch's ``DistributedSampler`` shard it like any dataset. The source index of each item is
    drawn per epoch from the dataset's random state, which :class:`~monai_ext.handlers.EpochSeeder` reseeds
    (it reseeds the two wrapped datasets' random transforms too), so a resumed run replays the same pairs.

    Args:
        source: labelled source-domain dataset (e.g. a ``CacheDataset`` of slices).
        target: target-domain dataset (slices with the current round's pseudo-labels).
        length: items per epoch (default: the larger of the two lengths).
        seed: initial random state.
    """

    def __init__(self, source: torch.utils.data.Dataset, target: torch.utils.data.Dataset, length: int | None = None,
                 seed: int = 0) -> None:
        self.source, self.target = source, target
        ns, nt = len(source), len(target)  # type: ignore[arg-type]
        if ns == 0:
            raise DataError("the source domain has no labelled training slices (check source_dir)")
        if nt == 0:
            raise DataError("the target domain has no training slices (check target_dir)")
        self.length = int(length) if length else max(ns, nt)
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self._src = np.zeros(self.length, np.int64)
        self._tgt = np.arange(self.length) % nt
        self.set_random_state(seed)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SourceTargetDataset:
        super().set_random_state(seed, state)
        ns, nt = len(self.source), len(self.target)  # type: ignore[arg-type]
        self._src = self.R.randint(0, ns, size=self.length)
        reps = int(math.ceil(self.length / nt))
        self._tgt = np.concatenate([self.R.permutation(nt) for _ in range(reps)])[: self.length]
        base = int(self.R.randint(0, 2**31 - 1))
        set_rnd(self.source, base)
        set_rnd(self.target, (base + 7919) % (2**31 - 1))
        return self

    def randomize(self, data: Any = None) -> None:  # the pairing is drawn in set_random_state
        pass

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index) % self.length
        return {"source": self.source[int(self._src[i])], "target": self.target[int(self._tgt[i])]}


# ------------------------------------------------------------------------------------------------ inference
def tta_maps(network: Callable[..., Any], x: torch.Tensor, flips: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """``(B, 3, H, W)`` = (background prob, foreground prob, centre heatmap), averaged over the identity and ``flips``."""
    views = [x] + [x.flip(list(dims)) for dims in flips]
    out = network(torch.cat(views, 0) if len(views) > 1 else x)  # one batched pass over all flips
    out = out["pred"] if isinstance(out, dict) else out
    out = out.float()
    maps = torch.cat([out[:, :2].softmax(1), out[:, 2:3]], 1)
    b = x.shape[0]
    acc = maps[:b]
    for k, dims in enumerate(flips, start=1):
        acc = acc + maps[k * b:(k + 1) * b].flip(list(dims))
    return acc / (1 + len(flips))


class EMInferer(Inferer):
    """Sliding-window inference over 2D slices ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)`` (slice by slice, a
    ``slice_batch`` of slices at a time) with optional 4-flip test-time augmentation.

    Returns ``(B, 3, [D,] H, W)``: background probability, foreground probability, centre heatmap.

    Args:
        roi_size: window size; a slice smaller than it along an axis is run whole along that axis, unpadded
            (InstanceNorm statistics would otherwise count the padding: on 256² test slices 264-px windows with
            padding cost source-only AJI 0.036).
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        flip_tta: average over the flips of y, x and both (the paper's teacher uses 4-flip TTA).
        mode: window blending (``"gaussian"`` or ``"constant"``).
        slice_batch: slices of a volume processed together.
        device: where the stitched output is kept (default: the input's device).
    """

    def __init__(self, roi_size: Sequence[int] | int = 256, sw_batch_size: int = 4, overlap: float = 0.25,
                 flip_tta: bool = False, mode: str = "gaussian", slice_batch: int = 8,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.sw = FittedSlidingWindowInferer(roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode,
                                             device=device)
        self.flips: list[tuple[int, ...]] = [(-1,), (-2,), (-2, -1)] if flip_tta else []
        self.slice_batch = max(int(slice_batch), 1)

    def _slices(self, x: torch.Tensor, network: Callable[..., Any]) -> torch.Tensor:
        return self.sw(x, lambda t: tta_maps(network, t, self.flips))

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim == 4:
            return self._slices(inputs, network)
        if inputs.ndim != 5:
            raise DataError(f"EMInferer needs (B, C, H, W) slices or (B, C, D, H, W) volumes, got {tuple(inputs.shape)}")
        outs = []
        for b in range(inputs.shape[0]):  # volumes of a batch, then chunks of slices
            vol = inputs[b].permute(1, 0, 2, 3)
            parts = [self._slices(vol[z:z + self.slice_batch], network) for z in range(0, vol.shape[0], self.slice_batch)]
            outs.append(torch.cat(parts, 0).permute(1, 0, 2, 3))
        return torch.stack(outs, 0)


# ------------------------------------------------------------------------------------------------ pseudo-labels
class IPLBuilder:
    """Builds one round of target targets for :class:`~monai_ext.handlers.PseudoLabelRounds`.

    Per target training slice it stores ``seg`` (uint8 0/1/255), ``det`` (heatmap target), ``det_weight`` and
    ``point_mask`` (see :class:`~monai_ext.pseudo.ipl.IPLResult`):

    - ``warmup`` / ``source`` rounds: teacher-free point targets (:func:`~monai_ext.pseudo.ipl.point_targets`);
    - ``stage1`` / ``stage2`` rounds: the teacher (the training network as it is when the round starts, i.e. the
      previous round's final model, in eval mode) predicts with 4-flip TTA, then
      :func:`~monai_ext.pseudo.ipl.select_instances` with the round's ``r`` and ``tau`` (UDA: pseudo-points from
      the top detection peaks replace the point labels);
    - ``supervised``: the target ground truth (:func:`~monai_ext.pseudo.ipl.supervised_targets`).

    Args:
        records: target training records.
        load: ``record -> sample`` with ``image`` ``(1, H, W)`` (preprocessed like training), ``points`` (may be
            absent) and, for ``supervised``, ``label``; ``meta.id`` names the sample.
        store: the pseudo-label store.
        network: the training network (DDP-unwrapped for inference, so only rank 0 runs it).
        schedule: the :class:`WDASchedule`.
        inferer: teacher inferer (default: :class:`EMInferer` with flip TTA, 256 windows).
        sigma, peak: heatmap Gaussian (must match the training targets).
        ipl: extra keyword arguments of :func:`~monai_ext.pseudo.ipl.select_instances`.
        uda: keyword arguments of :func:`~monai_ext.pseudo.ipl.pseudo_points_from_peaks` (besides prob, heatmap,
            ratio, tau, sigma, peak).
        device: teacher device (default: the network's).
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], load: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                 store: PseudoLabelStore, network: nn.Module, schedule: WDASchedule, inferer: Inferer | None = None,
                 sigma: float = 4.0, peak: float = 1.0, ipl: Mapping[str, Any] | None = None,
                 uda: Mapping[str, Any] | None = None, device: str | torch.device | None = None) -> None:
        if not records:
            raise DataError("no target training records to build pseudo-labels for")
        self.records = list(records)
        self.load = load
        self.store = store
        self.network = network
        self.schedule = schedule
        self.inferer = inferer if inferer is not None else EMInferer(256, flip_tta=True)
        self.sigma, self.peak = float(sigma), float(peak)
        self.ipl = dict(ipl or {})
        self.uda = dict(uda or {})
        self.device = device

    def _teacher_maps(self, net: nn.Module, image: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(np.asarray(image, np.float32))[None].to(device)
        with torch.no_grad():
            out = self.inferer(x, net)[0]
        out = to_numpy(out)
        return out[1], out[2]

    def build_one(self, sample: Mapping[str, Any], rnd: int, net: nn.Module | None, device: torch.device) -> IPLResult:
        """Targets of one loaded sample for round ``rnd``."""
        stage = self.schedule.stage(rnd)
        image = np.asarray(to_numpy(sample["image"]), np.float32)
        if image.ndim != 3:
            raise DataError(f"target samples must be 2D slices (1, H, W), got image shape {image.shape}")
        shape = image.shape[1:]
        points = np.asarray(to_numpy(sample.get("points", np.zeros((0, 2)))), np.float32).reshape(-1, 2)
        if self.schedule.mode == "uda":
            points = points[:0]
        if stage == "supervised":
            if "label" not in sample:
                raise DataError("mode 'supervised' needs target training labels; this target slice has none",
                                str(sample.get("meta", {}).get("image_path", "")))
            return supervised_targets(np.asarray(to_numpy(sample["label"]))[0], self.sigma, self.peak,
                                      self.ipl.get("centre", "centroid"))
        kw = {k: v for k, v in self.ipl.items() if k in ("prior_radius", "ignore_radius", "point_weight")}
        if stage in ("warmup", "source") or net is None:
            return point_targets(points, shape, self.sigma, self.peak, **kw)  # type: ignore[arg-type]
        prob, heat = self._teacher_maps(net, image, device)
        tau = self.schedule.tau(rnd)
        if self.schedule.mode == "uda":
            points = pseudo_points_from_peaks(prob, heat, self.schedule.uda_point_ratio, tau, self.sigma, self.peak,
                                              **self.uda)
        return select_instances(prob, heat, points, self.schedule.ratio(rnd), tau, sigma=self.sigma, peak=self.peak,
                                **self.ipl)

    def __call__(self, rnd: int, engine: Any = None) -> dict[str, Any]:
        stage = self.schedule.stage(rnd)
        net = _unwrap(self.network) if stage in ("stage1", "stage2") else None
        device = torch.device(self.device) if self.device is not None else (
            next(net.parameters()).device if net is not None else torch.device("cpu"))
        was_training = net.training if net is not None else False
        if net is not None:
            net.eval()
        per_slice = []
        try:
            for rec in progress(self.records, f"EM round {rnd}: pseudo-labels", unit="slice"):  # one target slice at a time (bounded memory)
                sample = self.load(rec)
                sid = str(sample["meta"]["id"]) if isinstance(sample.get("meta"), Mapping) else str(rec.get("id"))
                res = self.build_one(sample, rnd, net, device)
                self.store.write(rnd, sid, **res.arrays())
                per_slice.append(res.stats)
        finally:
            if net is not None and was_training:
                net.train()
        stats = merge_stats(per_slice)
        stats.update({"stage": stage, "ratio": self.schedule.ratio(rnd), "tau": self.schedule.tau(rnd),
                      "teacher": net is not None})
        logger.info("round %d (%s, r=%.2f, tau=%.2f): %s", rnd, stage, stats["ratio"], stats["tau"],
                    {k: v for k, v in stats.items() if isinstance(v, float)})
        return stats


# ------------------------------------------------------------------------------------------------ trainer
def _tensor(batch: Mapping[str, Any], key: str, device: Any, where: str) -> torch.Tensor:
    if key not in batch:
        raise TrainingError(f"the {where} batch has no {key!r} (keys: {sorted(batch)})")
    return torch.as_tensor(batch[key]).to(device, non_blocking=True)


class WDATrainer(GuardedTrainer):
    """One step = one source batch + one target batch through the shared multi-task network.

    Terms (weights per stage, :data:`DEFAULT_LOSS_WEIGHTS` overridden by ``loss_weights``):
    ``src_ce`` (source CE), ``src_det`` (source heatmap MSE), ``tgt_ce`` (target CE on pseudo-labels, 255 ignored),
    ``tgt_det`` (target weighted heatmap MSE, ignore zones = weight 0) and ``contrast`` (class-focused contrastive
    loss on target anchors). The two batches go through one forward pass (the network's InstanceNorm keeps
    samples independent); a domain whose terms all weigh 0 is not forwarded (in ``stage2`` the source
    prototype of the contrastive memory is then the one learnt in ``stage1``).

    Contrastive anchors (on the projection's grid, every ``proj_stride``-th pixel): in ``stage2`` the pseudo-label
    classes; otherwise pixels whose (detached) predicted class
    probability exceeds ``anchor_threshold`` (code: 0.95). The prototype memory is refreshed every
    ``memory_every`` iterations from the same masks (+ the point-verified instances and the source foreground).

    Args:
        schedule: the :class:`WDASchedule` (the current round is ``engine.state.pseudo_round``, set by
            ``PseudoLabelRounds``).
        contrastive: :class:`~monai_ext.losses.contrastive.ClassFocusedContrastiveLoss` (``None``: no contrast).
        loss_weights: ``{stage: {term: weight}}`` overrides.
        lr_scale: ``{stage: factor}`` multiplying the optimizer's initial learning rates in that stage.
        seg_loss, det_loss: default :class:`~monai_ext.losses.em.IgnoreCrossEntropyLoss` and
            :class:`~monai_ext.losses.em.WeightedHeatmapLoss`.
        anchor_threshold: confidence of anchors / prototypes taken from predictions.
        memory_every: memory refresh interval (iterations; paper code: 500 of 10k).
        kwargs: :class:`~monai_ext.engines.GuardedTrainer` arguments.
    """

    def __init__(self, *args: Any, schedule: WDASchedule, contrastive: ClassFocusedContrastiveLoss | None = None,
                 loss_weights: Mapping[str, Mapping[str, float]] | None = None,
                 lr_scale: Mapping[str, float] | None = None, seg_loss: nn.Module | None = None,
                 det_loss: nn.Module | None = None, anchor_threshold: float = 0.95, memory_every: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = schedule
        self.contrastive = contrastive
        self.weights = {s: dict(w) for s, w in DEFAULT_LOSS_WEIGHTS.items()}
        for stage, w in (loss_weights or {}).items():
            if stage not in self.weights:
                raise ValueError(f"unknown stage {stage!r} in loss_weights; stages: {STAGES}")
            unknown = set(w) - set(TERMS)
            if unknown:
                raise ValueError(f"unknown loss terms {sorted(unknown)} for stage {stage!r}; terms: {TERMS}")
            self.weights[stage].update({k: float(v) for k, v in w.items()})
        self.lr_scale = {str(k): float(v) for k, v in (lr_scale or {}).items()}
        self.base_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.seg_loss = seg_loss if seg_loss is not None else IgnoreCrossEntropyLoss()
        self.det_loss = det_loss if det_loss is not None else WeightedHeatmapLoss()
        self.anchor_threshold = float(anchor_threshold)
        self.memory_every = max(int(memory_every), 1)
        self.state.pseudo_round = 0

    def current_stage(self, engine: Any) -> str:
        return self.schedule.stage(int(getattr(engine.state, "pseudo_round", 0) or 0))

    def _set_lr(self, stage: str) -> None:
        scale = self.lr_scale.get(stage, 1.0)
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * scale

    def forward_loss(self, engine: GuardedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(batchdata, Mapping) or "source" not in batchdata or "target" not in batchdata:
            raise TrainingError("WDATrainer needs batches {'source': {...}, 'target': {...}} (use SourceTargetDataset)")
        stage = self.current_stage(engine)
        self._set_lr(stage)
        w = self.weights[stage]
        dev = engine.state.device
        use_contrast = self.contrastive is not None and w["contrast"] > 0
        need_src = w["src_ce"] > 0 or w["src_det"] > 0
        need_tgt = w["tgt_ce"] > 0 or w["tgt_det"] > 0 or use_contrast
        if use_contrast and not need_src and not bool(self.contrastive.memory.valid.any()):
            need_src = True  # no source prototype in memory yet: forward the source batch for it
        src, tgt = batchdata["source"], batchdata["target"]
        images = []
        if need_src:
            images.append(_tensor(src, Keys.IMAGE, dev, "source").float())
        if need_tgt:
            images.append(_tensor(tgt, Keys.IMAGE, dev, "target").float())
        if not images:
            raise TrainingError(f"every loss weight of stage {stage!r} is 0")
        if len(images) == 2 and images[0].shape[1:] != images[1].shape[1:]:
            raise TrainingError(f"source and target crops differ in shape: {tuple(images[0].shape)} vs "
                                f"{tuple(images[1].shape)}; use one patch_size")
        x = torch.cat(images, 0)
        out = engine.network(x, use_contrast)
        ns = images[0].shape[0] if need_src else 0
        zero = out.sum() * 0.0
        terms: dict[str, torch.Tensor] = {}
        loss = zero
        if need_src:
            s_out = out[:ns]
            s_seg = _tensor(src, "seg", dev, "source")
            if w["src_ce"] > 0:
                terms["src_ce"] = self.seg_loss(s_out[:, :2], s_seg)
            if w["src_det"] > 0:
                terms["src_det"] = self.det_loss(s_out[:, 2:3], _tensor(src, "det", dev, "source"),
                                                 _tensor(src, "det_weight", dev, "source"))
        if need_tgt:
            t_out = out[ns:]
            t_seg = _tensor(tgt, "seg", dev, "target")
            if w["tgt_ce"] > 0:
                terms["tgt_ce"] = self.seg_loss(t_out[:, :2], t_seg)
            if w["tgt_det"] > 0:
                terms["tgt_det"] = self.det_loss(t_out[:, 2:3], _tensor(tgt, "det", dev, "target"),
                                                 _tensor(tgt, "det_weight", dev, "target"))
            if use_contrast:
                terms["contrast"] = self._contrast(engine, stage, out, ns, src, tgt)
        for name, value in terms.items():
            loss = loss + w[name] * value
        return {Keys.IMAGE: x, Keys.PRED: out[:, :3].detach(), Keys.LOSS: loss,
                "terms": {k: float(v.detach()) for k, v in terms.items()}, "stage": stage}

    def _contrast(self, engine: Any, stage: str, out: torch.Tensor, ns: int, src: Mapping[str, Any],
                  tgt: Mapping[str, Any]) -> torch.Tensor:
        assert self.contrastive is not None
        dev = out.device
        st = max(int(getattr(_unwrap(engine.network), "proj_stride", 1)), 1)
        out = out[..., ::st, ::st]  # the projection's own grid (see MultiTaskUNet)
        feats = self.contrastive.normalize(out[:, 3:])
        s_feat, t_feat = feats[:ns], feats[ns:]
        with torch.no_grad():
            prob = out[:, :2].detach().float().softmax(1)
        s_prob, t_prob = prob[:ns], prob[ns:]
        t_seg = _tensor(tgt, "seg", dev, "target")[:, 0, ::st, ::st].long()
        if stage == "stage2":
            cand = [t_seg == 0, t_seg == 1]
        else:
            cand = [t_prob[:, 0] > self.anchor_threshold, t_prob[:, 1] > self.anchor_threshold]
        if engine.state.iteration % self.memory_every == 0 or engine.state.iteration <= 1:
            point = _tensor(tgt, "point_mask", dev, "target")[:, 0, ::st, ::st] > 0 if "point_mask" in tgt else None
            s_fg = None
            if ns > 0:  # source forwarded in this stage: refresh the cross-domain prototype too
                s_seg = _tensor(src, "seg", dev, "source")[:, 0, ::st, ::st]
                s_fg = (s_prob[:, 1] > self.anchor_threshold) & (s_seg == 1)
            self.contrastive.update_memory(t_feat, cand[1], cand[0], point, s_feat if ns > 0 else None, s_fg)
        return self.contrastive(t_feat, cand, [t_prob[:, 0], t_prob[:, 1]])
