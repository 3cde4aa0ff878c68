"""COIN engine: EMA teacher, flip-TTA sliding-window inferer, the round builder and the Ignite training loop."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped, RandSpatialCropd

from monai_ext.data.synthetic import make_dataset
from monai_ext.engines.coin import COINInferer, COINPseudoLabelBuilder, COINTrainer, EMATeacher, tta_probabilities
from monai_ext.errors import DataError, TrainingError
from monai_ext.handlers import PseudoLabelRounds
from monai_ext.networks.coin import COINUNet
from monai_ext.pseudo.features import FilterBankExtractor
from monai_ext.pseudo.propagation import PixelPropagation
from monai_ext.pseudo.refiners import ClassicalRefiner
from monai_ext.pseudo.seeds import FolderSeeds, StainWatershedSeeds
from monai_ext.pseudo.store import PseudoLabelStore
from monai_ext.transforms import LoadPseudoLabeld
from monai_ext.transforms.coin import PseudoTargetsd


def _net() -> COINUNet:
    torch.manual_seed(0)
    return COINUNet(features=(4, 8, 8, 16, 16, 4))


def test_ema_teacher_tracks_student() -> None:
    net = _net()
    ema = EMATeacher(net, decay=0.5, warmup=False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before = next(ema.module.parameters()).clone()
    ema.update(net)
    after = next(ema.module.parameters())
    assert torch.allclose(after, before + 0.5) and int(ema.num_updates) == 1
    assert not any(p.requires_grad for p in ema.module.parameters())
    sd = ema.state_dict()
    assert "num_updates" in sd and any(k.startswith("module.") for k in sd)


def test_inferer_probabilities_and_flip_equivariance() -> None:
    net = _net().eval()
    x = torch.rand(1, 3, 40, 56)
    out = COINInferer(roi_size=32, flip=True)(x, net)
    assert out.shape == (1, 4, 40, 56)
    assert torch.allclose(out[:, :2].sum(1), torch.ones(1, 40, 56), atol=1e-5)
    assert torch.allclose(out[:, 2:].sum(1), torch.ones(1, 40, 56), atol=1e-5)
    # flip TTA makes the prediction equivariant to a horizontal flip
    p = tta_probabilities(net, x, [(-1,), (-2,), (-1, -2)])
    pf = tta_probabilities(net, x.flip(-1), [(-1,), (-2,), (-1, -2)]).flip(-1)
    assert torch.allclose(p, pf, atol=1e-5)


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return make_dataset("he", 3, seed=99, shape=(96, 96))


def _records(samples: list[dict]) -> list[dict]:
    return [{"id": s["meta"]["id"]} for s in samples]


def _loader(samples: list[dict]):
    by_id = {s["meta"]["id"]: s for s in samples}

    def load(rec: dict) -> dict:
        s = by_id[rec["id"]]
        return {"image": s["image"], "label": s["label"], "meta": dict(s["meta"])}

    return load


def test_builder_rounds_grow_and_never_read_labels(tmp_path, samples: list[dict]) -> None:
    store = PseudoLabelStore(tmp_path / "store")
    teacher = EMATeacher(_net())
    seen_keys: list[set] = []
    load = _loader(samples)

    def spy(rec: dict) -> dict:
        d = load(rec)
        seen_keys.append(set(d))
        return d

    builder = COINPseudoLabelBuilder(
        _records(samples), spy, store, StainWatershedSeeds(), ClassicalRefiner(),
        propagation=PixelPropagation(FilterBankExtractor(device="cpu")), teacher=teacher,
        inferer=COINInferer(roi_size=64, flip=False), device="cpu", overlay_dir=tmp_path / "ov", overlays=1)
    stats0 = builder(0)
    store.finish(0, stats0)
    for key in ("threshold", "n_pred", "n_accepted", "n_ignored", "scores"):
        assert key in stats0
    assert stats0["n_pred"] > 0 and 0 < stats0["threshold"] <= 0.9 and len(stats0["scores"]) == stats0["n_pred"]
    arr = store.load(samples[0]["meta"]["id"], 0)
    assert {"instances", "seg", "edge", "pred", "scores", "seeds"} <= set(arr)
    assert set(np.unique(arr["seg"])) <= {0, 1, 255}
    assert list((tmp_path / "ov").glob("pseudo_round00_*.png"))
    stats1 = builder(1)
    # rule: previously accepted instances are kept unless a new accepted one covers them
    assert stats1["n_accepted"] >= stats1["n_new_accepted"] and stats1["n_kept_previous"] >= 0
    assert stats1["n_accepted"] >= min(stats0["n_accepted"], 1)
    # the builder reads images only: labels are loaded by the reader but never used
    assert all("image" in k for k in seen_keys)


def test_builder_keep_ignore_never_turns_earlier_ignore_into_background(tmp_path, samples: list[dict]) -> None:
    store = PseudoLabelStore(tmp_path / "store")
    builder = COINPseudoLabelBuilder(
        _records(samples), _loader(samples), store, StainWatershedSeeds(), ClassicalRefiner(),
        propagation=PixelPropagation(FilterBankExtractor(device="cpu")), teacher=EMATeacher(_net()),
        inferer=COINInferer(roi_size=64, flip=False), device="cpu", keep_ignore=True)
    store.finish(0, builder(0))
    builder(1)  # an untrained teacher: its foreground is arbitrary, the earlier ignore region must survive
    for s in samples:
        before = store.load(s["meta"]["id"], 0)["instances"]
        after = store.load(s["meta"]["id"], 1)["instances"]
        assert (before < 0).any()
        assert not ((before < 0) & (after == 0)).any()


def test_builder_with_imported_seeds_and_no_propagation(tmp_path, samples: list[dict]) -> None:
    folder = tmp_path / "ssa_masks"
    folder.mkdir()
    for s in samples:
        tifffile.imwrite(folder / f"{s['meta']['id']}.tif", s["label"][0].astype(np.uint16))
    store = PseudoLabelStore(tmp_path / "store")
    builder = COINPseudoLabelBuilder(_records(samples), _loader(samples), store, FolderSeeds(folder),
                                     ClassicalRefiner(), propagation=None)
    stats = builder(0)
    assert stats["n_pred"] == sum(len(np.unique(s["label"])) - 1 for s in samples)
    with pytest.raises(TrainingError):
        builder.predict_instances(samples[0]["image"])
    with pytest.raises(DataError):
        COINPseudoLabelBuilder([], _loader(samples), store, FolderSeeds(folder), ClassicalRefiner())


def test_trainer_runs_rounds_with_ignite(tmp_path, samples: list[dict]) -> None:
    store = PseudoLabelStore(tmp_path / "store")
    net = _net()
    teacher = EMATeacher(net, decay=0.9)
    builder = COINPseudoLabelBuilder(_records(samples), _loader(samples), store, StainWatershedSeeds(),
                                     ClassicalRefiner(), propagation=None, teacher=teacher,
                                     inferer=COINInferer(roi_size=64, flip=False), device="cpu")
    data = [{"image": s["image"], "meta": {"id": s["meta"]["id"]}} for s in samples]
    tf = Compose([LoadPseudoLabeld(store, keys=["seg", "edge"]), PseudoTargetsd(),
                  RandSpatialCropd(keys=["image", "seg", "edge"], roi_size=(64, 64)),
                  EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
                  EnsureTyped(keys=["seg", "edge"], dtype=torch.int64, track_meta=False)])
    loader = DataLoader(Dataset(data, tf), batch_size=3)
    trainer = COINTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=loader, network=net,
                          optimizer=torch.optim.Adam(net.parameters(), 1e-3), teacher=teacher)
    rounds = PseudoLabelRounds(store, builder, num_rounds=2, epochs_per_round=1)
    rounds.attach(trainer)
    trainer.run()
    assert store.rounds_done() == [0, 1] and int(teacher.num_updates) == 2
    assert set(trainer.state.loss_terms) == {"loss_seg_ce", "loss_seg_dice", "loss_edge_ce", "loss_edge_dice"}
    assert trainer.state.metrics["pseudo_round"] == 1.0
