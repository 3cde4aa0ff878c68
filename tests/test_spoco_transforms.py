"""SPOCO transforms: seeded sparse-instance sampling (label 0 = unlabelled), photometric views of a shared crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandFlipd

from monai_ext.errors import DataError
from monai_ext.transforms.spoco import RandPhotometricd, SparseInstancesd, SpocoViewsd, sample_instances


def _label(n: int = 10) -> np.ndarray:
    lab = np.zeros((1, 20, 20 * n), np.int32)
    for k in range(n):
        lab[0, 2:18, 20 * k + 2: 20 * k + 18] = k + 1
    return lab


def test_ratio_is_rounded_like_spoco() -> None:
    lab = _label(10)
    for ratio, expected in ((0.1, 1), (0.4, 4), (0.25, 2), (1.0, 10), (0.0, 0), (0.04, 0)):
        out = SparseInstancesd("label", ratio=ratio, seed=0)({"label": lab, "meta": {"id": "a"}})
        kept = np.unique(out["label"][out["label"] > 0])
        assert len(kept) == expected, ratio
        # kept instances are untouched, the others are 0 (unlabelled)
        for k in kept:
            assert np.array_equal(out["label"] == k, lab == k)
    out = SparseInstancesd("label", ratio=0.04, min_instances=1)({"label": lab, "meta": {"id": "a"}})
    assert len(np.unique(out["label"][out["label"] > 0])) == 1


def test_choice_depends_on_seed_and_id_only() -> None:
    lab = _label(10)
    t = SparseInstancesd("label", ratio=0.4, seed=3, kept_key="kept")
    a = t({"label": lab, "meta": {"id": "plant001"}})["kept"]
    b = t({"label": lab, "meta": {"id": "plant001"}})["kept"]  # same sample, another epoch
    c = SparseInstancesd("label", ratio=0.4, seed=3, kept_key="kept")({"label": lab, "meta": {"id": "plant001"}})["kept"]
    assert np.array_equal(a, b) and np.array_equal(a, c)
    others = {tuple(t({"label": lab, "meta": {"id": f"plant{i:03d}"}})["kept"]) for i in range(20)}
    assert len(others) > 5
    other_seed = {tuple(SparseInstancesd("label", ratio=0.4, seed=s, kept_key="k")(
        {"label": lab, "meta": {"id": "plant001"}})["k"]) for s in range(10)}
    assert len(other_seed) > 3


def test_negative_ignore_labels_survive_and_errors() -> None:
    lab = _label(4)
    lab[0, 0, :] = -1
    out, kept = sample_instances(lab, 0.5, np.random.default_rng(0))
    assert np.all(out[0, 0] == -1) and len(kept) == 2
    with pytest.raises(DataError, match="id"):
        SparseInstancesd("label", ratio=0.5)({"label": lab})
    with pytest.raises(ValueError):
        SparseInstancesd("label", ratio=1.5)
    with pytest.raises(DataError, match="integer"):
        SparseInstancesd("label", ratio=0.5)({"label": lab + 0.5, "meta": {"id": "x"}})


def test_photometric_changes_colours_not_geometry() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16)).astype(np.float32)
    t = RandPhotometricd("image", jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0)
    t.set_random_state(0)
    out = t({"image": img})["image"]
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out, img)
    gray = RandPhotometricd("image", jitter_prob=0.0, grayscale_prob=1.0, blur_prob=0.0)({"image": img})["image"]
    assert np.allclose(gray[0], gray[1]) and np.allclose(gray[1], gray[2])
    one = RandPhotometricd("image", jitter_prob=1.0, blur_prob=1.0)({"image": img[:1]})["image"]  # 1 channel works
    assert one.shape == (1, 16, 16)
    vol = RandPhotometricd("image", jitter_prob=1.0, blur_prob=1.0)({"image": torch.rand(1, 4, 8, 8)})["image"]
    assert isinstance(vol, torch.Tensor) and vol.shape == (1, 4, 8, 8)


def test_views_share_geometry_and_differ_in_colour() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((3, 24, 24)).astype(np.float32)
    img[:, :12] *= 0.2  # a dark half: geometry visible in every view
    lab = np.zeros((1, 24, 24), np.int32)
    lab[0, :12] = 1
    pipe = Compose([
        RandFlipd(["image", "label"], prob=1.0, spatial_axis=0),
        SpocoViewsd("image", view_key="image2", jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0),
    ])
    pipe.set_random_state(5)
    d = pipe({"image": img, "label": lab})
    assert d["image"].shape == d["image2"].shape == img.shape
    assert not np.allclose(d["image"], d["image2"])  # independent photometric draws
    assert np.all(d["label"][0, 12:] == 1)  # flipped together
    for v in (d["image"], d["image2"]):
        assert v[:, 12:].mean() < v[:, :12].mean()  # both views carry the flipped geometry
    pipe.set_random_state(5)
    again = pipe({"image": img, "label": lab})
    assert np.array_equal(again["image"], d["image"]) and np.array_equal(again["image2"], d["image2"])
