"""Point transforms: centroids, nuclei blob detection, padding for batching, augmentation that moves the points."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_ext.errors import DataError
from monai_ext.transforms.points import (
    PadPointsd,
    PointsFromLabeld,
    PointsFromNucleid,
    RandPointCropd,
    RandPointDropd,
    RandPointFlipRotated,
    RandPointJitterd,
    RandPointZoomd,
    SelectMetad,
    SizePriord,
    detect_nuclei_points,
    label_centroids,
)


def _marked(h: int = 40, w: int = 50, n: int = 12, seed: int = 0) -> dict:
    """Image whose pixel under each point holds a unique marker value; label with the same marker ids."""
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], 1).astype(np.float32)
    pts = np.unique(pts, axis=0)
    img = np.zeros((2, h, w), np.float32)
    lab = np.zeros((1, h, w), np.int32)
    for k, (y, x) in enumerate(pts.astype(int), start=1):
        img[:, y, x] = k
        lab[0, y, x] = k
    return {"image": img, "label": lab, "points": pts, "point_ids": np.arange(1, len(pts) + 1)}


def _check_markers(d: dict) -> None:
    pts = np.rint(d["points"]).astype(int)
    vals = d["image"][0][pts[:, 0], pts[:, 1]]
    assert (vals == d["point_ids"]).all()
    assert (d["label"][0][pts[:, 0], pts[:, 1]] == d["point_ids"]).all()


def test_label_centroids_and_points_from_label() -> None:
    lab = np.zeros((1, 6, 6), np.int32)
    lab[0, 0:2, 0:2] = 3
    lab[0, 3:6, 4] = 7
    pts, ids = label_centroids(lab)
    assert ids.tolist() == [3, 7]
    assert pts.tolist() == [[0.5, 0.5], [4.0, 4.0]]
    d = PointsFromLabeld("label")({"label": lab})
    assert d["point_ids"].tolist() == [3, 7] and d["points"].shape == (2, 2)
    assert label_centroids(np.zeros((4, 4), int))[0].shape == (0, 2)


def test_nuclei_blob_detection() -> None:
    yy, xx = np.mgrid[:80, :80]
    centres = [(15, 20), (40, 60), (65, 30)]
    nuc = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 4.0**2)) for y, x in centres).astype(np.float32)
    pts = detect_nuclei_points(nuc, radius=6.0, threshold=0.1)
    assert len(pts) == 3
    found = sorted(map(tuple, np.rint(pts).astype(int).tolist()))
    assert found == sorted(centres)
    img = np.stack([np.zeros_like(nuc), nuc])
    d = PointsFromNucleid("image", channel=1, drop_channel=True, radius=6.0, threshold=0.1)({"image": img})
    assert d["image"].shape == (1, 80, 80) and len(d["points"]) == 3
    with pytest.raises(DataError):
        PointsFromNucleid("image", channel=3)({"image": img})


def test_pad_points_and_batching(caplog: pytest.LogCaptureFixture) -> None:
    samples = [{"points": np.ones((n, 2), np.float32), "point_ids": np.arange(n), "meta": {"id": f"s{n}"}}
               for n in (0, 3, 5)]
    t = PadPointsd("points", max_points=4)
    with caplog.at_level(logging.WARNING):
        out = [t(s) for s in samples]
    assert "more than max_points=4" in caplog.text
    assert [o["points_valid"].sum() for o in out] == [0, 3, 4]
    assert (out[1]["points"][3] == -1).all() and out[1]["point_ids"].tolist() == [0, 1, 2, -1]
    batch = next(iter(DataLoader(Dataset(out), batch_size=3)))
    assert batch["points"].shape == (3, 4, 2) and batch["points_valid"].dtype == torch.bool


@pytest.mark.parametrize("seed", range(5))
def test_spatial_augmentation_moves_points_with_pixels(seed: int) -> None:
    d = _marked(seed=seed)
    for t in (RandPointFlipRotated(["image", "label"]), RandPointCropd(["image", "label"], (24, 60))):
        t.set_random_state(seed)
        d = t(d)
        _check_markers(d)
    assert d["image"].shape[-2:] == (24, 60)  # cropped in y, padded in x
    assert d["points"][:, 1].max() < 60 and len(d["points"]) == len(d["point_ids"])


def test_zoom_scales_points() -> None:
    img = np.zeros((1, 40, 40), np.float32)
    lab = np.zeros((1, 40, 40), np.int32)
    img[0, 18:23, 8:13] = 1.0  # a 5x5 blob centred at (20, 10)
    lab[0, 18:23, 8:13] = 1
    t = RandPointZoomd(["image", "label"], 1.5, 1.5)
    d = t({"image": img, "label": lab, "points": np.array([[20.0, 10.0]], np.float32)})
    assert d["image"].shape == (1, 60, 60) and d["label"].dtype == np.int32
    cy, cx = label_centroids(d["label"])[0][0]
    assert d["points"][0] == pytest.approx([cy, cx], abs=0.6)
    assert d["points"][0] == pytest.approx([30.25, 15.25])


def test_jitter_drop_prior_meta() -> None:
    d = {"points": np.zeros((1000, 2), np.float32), "point_ids": np.arange(1000)}
    j = RandPointJitterd("points", sigma=2.0)
    j.set_random_state(0)
    assert j(d)["points"].std() == pytest.approx(2.0, rel=0.1)
    dr = RandPointDropd("points", prob=0.3)
    dr.set_random_state(0)
    out = dr(d)
    assert 600 < len(out["points"]) < 800 and len(out["point_ids"]) == len(out["points"])
    sp = SizePriord(20.0, per_class={"BV2": 10.0, "SKOV3": 20.0, "MCF7": 15.0})
    assert sp({"meta": {"cell_line": "BV2"}})["prior_d"] == 10.0
    got = sp({"meta": {"cell_line": "A172"}})
    assert got["prior_d"] == 20.0 and got["class_index"] == 0
    assert sp({"meta": {"cell_line": "SKOV3"}})["class_index"] == 2
    assert sp({})["prior_d"] == 20.0
    with pytest.raises(ValueError):
        SizePriord(0.0)
    m = SelectMetad(fields=("id", "cell_line"))({"meta": {"id": "a", "image_path": "/x", "cell_line": None}})
    assert m["meta"] == {"id": "a", "cell_line": ""}
