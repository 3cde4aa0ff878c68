"""WDA engine: round schedule, source + target dataset, slice / volume inferer, IPL builder, trainer step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_ext.engines.em import (
    EMInferer,
    IPLBuilder,
    SourceTargetDataset,
    WDASchedule,
    WDATrainer,
    tta_maps,
)
from monai_ext.errors import DataError, TrainingError
from monai_ext.handlers import PseudoLabelRounds
from monai_ext.losses.contrastive import ClassFocusedContrastiveLoss
from monai_ext.networks.multitask import MultiTaskUNet
from monai_ext.pseudo.store import PseudoLabelStore
from monai_ext.transforms.em import instance_targets


def test_schedule() -> None:
    s = WDASchedule("wda", warmup_rounds=2, stage1_ratios=[0.0, 0.3], stage2_ratios=[0.35, 0.7])
    assert s.num_rounds == 6
    assert [s.stage(r) for r in range(6)] == ["warmup", "warmup", "stage1", "stage1", "stage2", "stage2"]
    assert [s.ratio(r) for r in range(6)] == [0.0, 0.0, 0.0, 0.3, 0.35, 0.7]
    assert s.tau(2) == 0.9 and s.tau(5) == 0.8 and s.stage(99) == "stage2"
    assert WDASchedule("source_only").stage(6) == "source" and WDASchedule("supervised").stage(0) == "supervised"
    assert len(s.describe()) == 6
    for bad in ({"mode": "x"}, {"warmup_rounds": 0}, {"stage1_tau": 0.2}, {"stage2_ratios": [-1.0]}):
        with pytest.raises(ValueError):
            WDASchedule(**bad)


def test_source_target_dataset_pairs_and_reseeding() -> None:
    src = Dataset([{"i": i} for i in range(3)])
    tgt = Dataset([{"j": j} for j in range(5)])
    ds = SourceTargetDataset(src, tgt, length=10, seed=1)
    assert len(ds) == 10
    items = [ds[i] for i in range(10)]
    assert sorted(it["target"]["j"] for it in items) == sorted([0, 1, 2, 3, 4] * 2)
    assert all(0 <= it["source"]["i"] < 3 for it in items)
    first = [it["source"]["i"] for it in items]
    ds.set_random_state(1)
    assert [ds[i]["source"]["i"] for i in range(10)] == first
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert set(batch) == {"source", "target"} and batch["target"]["j"].shape == (4,)
    with pytest.raises(DataError):
        SourceTargetDataset(Dataset([]), tgt)


def test_inferer_2d_3d_and_tta() -> None:
    torch.manual_seed(0)
    net = MultiTaskUNet(channels=(4, 8)).eval()
    x = torch.rand(1, 1, 24, 30)
    with torch.no_grad():
        out = EMInferer(16, overlap=0.25)(x, net)
        assert out.shape == (1, 3, 24, 30)
        torch.testing.assert_close(out[:, 0] + out[:, 1], torch.ones(1, 24, 30))
        vol = torch.rand(2, 1, 3, 24, 30)
        out3 = EMInferer(32, slice_batch=2, flip_tta=True)(vol, net)
        assert out3.shape == (2, 3, 3, 24, 30)
        ref = EMInferer(32, flip_tta=True)(vol[1:, :, 2], net)
        torch.testing.assert_close(out3[1:, :, 2], ref, atol=1e-5, rtol=1e-4)
        # TTA of a flip-equivariant "network" equals no TTA
        ident = lambda t: torch.cat([t, -t, t.abs()], 1)  # noqa: E731
        torch.testing.assert_close(tta_maps(ident, x, [(-1,), (-2,), (-2, -1)]), tta_maps(ident, x))
        # a window larger than the slice runs the whole slice, unpadded (InstanceNorm sees no padding)
        whole = torch.softmax(net(x)[:, :2], 1)
        torch.testing.assert_close(EMInferer(64)(x, net)[:, :2], whole, atol=1e-5, rtol=1e-4)
        # and larger along one axis only: full height, windows along the width
        assert EMInferer((64, 16), overlap=0.25)(x, net).shape == (1, 3, 24, 30)
    with pytest.raises(DataError):
        EMInferer(16)(torch.rand(1, 8, 8), net)


def _slices(n: int = 3, size: int = 48, labelled: bool = True) -> list[dict]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for k in range(n):
        lab = np.zeros((size, size), np.int32)
        centres = rng.uniform(8, size - 8, (3, 2))
        for i, (cy, cx) in enumerate(centres, start=1):
            lab[np.hypot(yy - cy, xx - cx) < 5] = i
        img = (lab > 0).astype(np.float32)[None] + rng.normal(0, 0.1, (1, size, size)).astype(np.float32)
        d = {"image": img, "points": centres[:1].astype(np.float32), "meta": {"id": f"t{k}"}}
        if labelled:
            d["label"] = lab[None]
        out.append(d)
    return out


@pytest.mark.parametrize("mode", ["wda", "uda", "supervised", "source_only"])
def test_builder_writes_every_round(tmp_path, mode: str) -> None:
    torch.manual_seed(0)
    net = MultiTaskUNet(channels=(4, 8))
    samples = {s["meta"]["id"]: s for s in _slices()}
    sched = WDASchedule(mode, warmup_rounds=1, stage1_ratios=[0.5], stage2_ratios=[0.5], stage1_tau=0.5)
    store = PseudoLabelStore(tmp_path / "pl")
    builder = IPLBuilder([{"id": k} for k in samples], lambda r: samples[r["id"]], store, net, sched,
                         inferer=EMInferer(32, flip_tta=True), sigma=2.0, ipl={"min_size": 2})
    for rnd in range(sched.num_rounds):
        stats = builder(rnd)
        store.finish(rnd, stats)
        arr = store.load("t0", rnd)
        assert set(arr) == {"seg", "det", "det_weight", "point_mask"} and arr["seg"].shape == (48, 48)
        assert stats["slices"] == 3 and stats["stage"] == sched.stage(rnd)
        assert stats["teacher"] == (sched.stage(rnd) in ("stage1", "stage2"))
    if mode == "supervised":
        np.testing.assert_array_equal(store.load("t1", 0)["seg"], samples["t1"]["label"][0] > 0)
    if mode == "uda":
        assert store.stats(0)["points"] == 0
    assert net.training  # restored after the teacher pass
    del samples["t0"]["label"]
    with pytest.raises(DataError):
        IPLBuilder([{"id": "t0"}], lambda r: samples["t0"], store, net, WDASchedule("supervised")).build_one(
            samples["t0"], 0, None, torch.device("cpu"))


def _pairs(size: int = 32) -> list[dict]:
    out = []
    for s in _slices(4, size):
        seg, det, w = instance_targets(s["label"][0], sigma=2.0)
        src = {"image": s["image"], "seg": seg[None], "det": det[None], "det_weight": w[None]}
        tseg = seg.copy()
        tseg[:4] = 255
        tgt = {"image": s["image"], "seg": tseg[None], "det": det[None], "det_weight": w[None],
               "point_mask": (seg == 1).astype(np.uint8)[None]}
        out.append({"source": src, "target": tgt})
    return out


@pytest.mark.parametrize("rnd,expected", [(0, {"src_ce", "src_det", "tgt_det"}),
                                          (1, {"src_ce", "src_det", "tgt_det", "contrast"}),
                                          (2, {"tgt_ce", "tgt_det", "contrast"})])
def test_trainer_stages(rnd: int, expected: set) -> None:
    torch.manual_seed(0)
    net = MultiTaskUNet(channels=(4, 8), proj_dim=8)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loader = DataLoader(Dataset(_pairs()), batch_size=2)
    sched = WDASchedule("wda", warmup_rounds=1, stage1_ratios=[0.0], stage2_ratios=[0.5])
    contrast = ClassFocusedContrastiveLoss(dim=8)
    trainer = WDATrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
                         optimizer=opt, schedule=sched, contrastive=contrast, anchor_threshold=0.0,
                         lr_scale={"stage2": 0.5})
    trainer.state.pseudo_round = rnd
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    terms = trainer.state.loss_terms
    assert set(terms) == expected and trainer.state.output[0]["stage"] == sched.stage(rnd)
    assert all(np.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.5 if rnd == 2 else 1.0))
    if "contrast" in expected:
        assert bool(contrast.memory.valid.any())


def test_trainer_rejects_bad_batches_and_weights() -> None:
    net = MultiTaskUNet(channels=(4, 8))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loader = DataLoader(Dataset([{"image": np.zeros((1, 8, 8), np.float32)}]), batch_size=1)
    trainer = WDATrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
                         optimizer=opt, schedule=WDASchedule())
    with pytest.raises(TrainingError):
        trainer.run()
    with pytest.raises(ValueError):
        WDATrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net, optimizer=opt,
                   schedule=WDASchedule(), loss_weights={"stage1": {"bogus": 1.0}})


def test_rounds_handler_drives_the_trainer(tmp_path) -> None:
    torch.manual_seed(0)
    net = MultiTaskUNet(channels=(4, 8), proj_dim=8)
    samples = {s["meta"]["id"]: s for s in _slices(2, 32)}
    sched = WDASchedule("wda", warmup_rounds=1, stage1_ratios=[0.3], stage2_ratios=[0.5])
    store = PseudoLabelStore(tmp_path / "pl")
    builder = IPLBuilder([{"id": k} for k in samples], lambda r: samples[r["id"]], store, net, sched,
                         inferer=EMInferer(32), sigma=2.0)
    from monai.transforms import Compose, EnsureTyped

    from monai_ext.transforms import LoadPseudoLabeld

    keys = ["seg", "det", "det_weight", "point_mask"]
    tgt = Dataset([{"image": s["image"], "meta": s["meta"]} for s in samples.values()],
                  Compose([LoadPseudoLabeld(store, keys), EnsureTyped(["image", *keys], track_meta=False)]))
    src = Dataset([p["source"] for p in _pairs()])
    loader = DataLoader(SourceTargetDataset(src, tgt, length=2), batch_size=2)
    trainer = WDATrainer(device=torch.device("cpu"), max_epochs=sched.num_rounds, train_data_loader=loader,
                         network=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), schedule=sched,
                         contrastive=ClassFocusedContrastiveLoss(dim=8))
    rounds = PseudoLabelRounds(store, builder, sched.num_rounds, 1)
    rounds.attach(trainer)
    stages = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stages.append(e.state.output[0]["stage"]))
    trainer.run()
    assert stages == ["warmup", "stage1", "stage2"] and store.rounds_done() == [0, 1, 2]
