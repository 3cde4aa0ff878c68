# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""The synthetic generators: ground truth matches the image, samples follow the data contract, seeds are honoured."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed
from skimage.measure import label as cc_label

from monai_ext.data.synthetic import (
    EM_DOMAINS,
    FLUO_DEFAULTS,
    HE_DEFAULTS,
    ROSETTE_DEFAULTS,
    inside_points,
    keep_largest_parts,
    make_dataset,
    sample_seeds,
    sparse_points,
    synth_em,
    synth_fluorescence,
    synth_he_tile,
    synth_rosette,
)

GENERATORS = {
    "he": lambda seed, **kw: synth_he_tile(seed, **kw),
    "fluorescence": lambda seed, **kw: synth_fluorescence(seed, **kw),
    "em_source": lambda seed, **kw: synth_em(seed, "source", **kw),
    "em_target": lambda seed, **kw: synth_em(seed, "target", **kw),
    "rosette": lambda seed, **kw: synth_rosette(seed, **kw),
}
CHANNELS = {"he": 3, "fluorescence": 1, "em_source": 1, "em_target": 1, "rosette": 3}


@pytest.fixture(scope="module")
def samples() -> dict[str, dict]:
    """One default 256^2 sample per generator (seed 3), shared by the contract tests."""
    return {name: gen(3) for name, gen in GENERATORS.items()}


def _check_instances(label: np.ndarray) -> np.ndarray:
    """Every id is non-empty and one face-connected piece; returns the ids."""
    ids = np.unique(label[label > 0])
    assert ids.size > 0
    # connected components of equal value: one component per id <=> every instance is connected
    cc = cc_label(label, background=0, connectivity=1)
    assert cc.max() == ids.size, "an instance is split into several pieces"
    return ids


@pytest.mark.parametrize("name", list(GENERATORS))
def test_contract(samples, name):
    s = samples[name]
    img, lab = s["image"], s["label"]
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[0] == CHANNELS[name]
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    assert img.std() > 0.02, "image is nearly constant"
    assert lab.dtype == np.int32 and lab.shape == (1,) + img.shape[1:]
    assert lab.min() >= 0
    ids = _check_instances(lab[0])
    assert np.array_equal(ids, np.arange(1, ids.size + 1)), "ids are 1..N"
    assert s["meta"]["n_instances"] == ids.size
    for key in ("id", "dataset", "image_path", "seed", "kind", "difficulty"):
        assert key in s["meta"]
    assert s["meta"]["seed"] == 3
    for key in ("points", "gt_points"):
        if key in s:
            p = s[key]
            assert p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 2
            assert (p >= 0).all() and (p[:, 0] <= img.shape[1] - 1).all() and (p[:, 1] <= img.shape[2] - 1).all()


@pytest.mark.parametrize("name", list(GENERATORS))
def test_determinism_and_seeds(samples, name):
    a, b = samples[name], GENERATORS[name](3)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    c = GENERATORS[name](4)
    assert not np.array_equal(a["label"], c["label"])
    assert np.abs(a["image"] - c["image"]).mean() > 0.01
    g = GENERATORS[name](np.random.default_rng(3))  # a Generator is accepted too
    assert g["label"].shape == a["label"].shape and g["meta"]["seed"] is None


def test_he_ground_truth_matches_image(samples):
    s = samples["he"]
    lab = s["label"][0] > 0
    hema = rgb2hed(s["image"].transpose(1, 2, 0))[..., 0]
    assert hema[lab].mean() > hema[~lab].mean() + 0.02, "nuclei carry more haematoxylin than the background"
    assert s["image"][:, lab].mean() < s["image"][:, ~lab].mean() - 0.1, "nuclei are darker"
    # the true (noise-free) haematoxylin map matches the label closely
    assert s["hematoxylin"][0][lab].mean() > 2 * s["hematoxylin"][0][~lab].mean()
    # sizes: MoNuSeg-like at reduced scale, some touching nuclei (clumps)
    areas = np.bincount(s["label"][0].ravel())[1:]
    assert 7.0 < np.sqrt(np.median(areas) / np.pi) < 16.0
    assert 0.15 < lab.mean() < 0.4
    touching = (s["label"][0][:, 1:] != s["label"][0][:, :-1]) & (s["label"][0][:, 1:] > 0) & (
        s["label"][0][:, :-1] > 0)
    assert touching.sum() > 20, "clumps of touching nuclei"


def test_he_naive_threshold_is_imperfect():
    """The false-positive trap and pale nuclei make a global threshold on haematoxylin miss a lot; easy knobs fix it."""
    from skimage.filters import threshold_otsu

    def fg_iou(s):
        h = rgb2hed(s["image"].transpose(1, 2, 0))[..., 0]
        m, g = h > threshold_otsu(h), s["label"][0] > 0
        return (m & g).sum() / (m | g).sum()

    hard = np.mean([fg_iou(synth_he_tile(k)) for k in (0, 1)])
    easy = np.mean([fg_iou(synth_he_tile(k, stroma_h=0.0, pale_fraction=0.0, cytoplasm_h=0.05, debris=0))
                    for k in (0, 1)])
    assert hard < 0.75 and easy > hard + 0.05


def test_fluorescence_ground_truth_and_points(samples):
    s = samples["fluorescence"]
    lab, cyto, nuc = s["label"][0], s["image"][0], s["nuclei"][0]
    fg = lab > 0
    assert cyto[fg].mean() > cyto[~fg].mean() + 0.15, "cells are brighter than background"
    # every cell is visible above the local background, the dim ones included
    means = np.bincount(lab.ravel(), cyto.ravel()) / np.maximum(np.bincount(lab.ravel()), 1)
    assert (means[1:] > cyto[~fg].mean() + 0.03).mean() > 0.95
    nl = s["nuclei_label"][0]
    assert (nl > 0).sum() > 0 and np.all(lab[nl > 0] == nl[nl > 0]), "nuclei lie inside their cell"
    assert nuc[nl > 0].mean() > nuc[nl == 0].mean() + 0.2
    # non-convex cells: mean solidity clearly below 1
    from skimage.measure import regionprops

    sol = [r.solidity for r in regionprops(lab) if r.area > 100]
    assert np.mean(sol) < 0.95
    # points from blob detection: mostly inside cells, most cells have one, but not the centroids
    pts, gt = s["points"], s["gt_points"]
    assert len(gt) == lab.max()
    idx = np.rint(pts).astype(int)
    hit = lab[idx[:, 0], idx[:, 1]]
    assert (hit > 0).mean() > 0.85
    assert np.unique(hit[hit > 0]).size / lab.max() > 0.8
    d = np.sqrt(((pts[:, None] - gt[None]) ** 2).sum(-1)).min(1)
    assert d.mean() > 0.5, "points are detected, not copied from the centroids"


def test_fluorescence_two_channels():
    s = synth_fluorescence(1, channels="both", shape=(128, 160))
    assert s["image"].shape == (2, 128, 160)
    assert np.array_equal(s["image"][1], s["nuclei"][0])
    with pytest.raises(ValueError):
        synth_fluorescence(1, channels="rgb")


@pytest.mark.parametrize("domain", list(EM_DOMAINS))
def test_em_ground_truth_matches_image(samples, domain):
    s = samples[f"em_{domain}"]
    lab, img = s["label"][0], s["image"][0]
    assert s["meta"]["domain"] == domain
    assert img[lab > 0].mean() < img[lab == 0].mean() - 0.05, "mitochondria are darker than the cytoplasm"
    # sparse points: ceil(15 %) of the instances, each inside an instance
    pts = s["points"]
    assert len(pts) == int(np.ceil(0.15 * lab.max()))
    idx = np.rint(pts).astype(int)
    assert (lab[idx[:, 0], idx[:, 1]] > 0).all()


def test_em_domains_differ(samples):
    src, tgt = samples["em_source"], samples["em_target"]
    size = {d: np.median(np.bincount(s["label"][0].ravel())[1:]) for d, s in (("s", src), ("t", tgt))}
    assert size["t"] > 1.5 * size["s"], "target mitochondria are larger (scale ~1.4)"
    bg_s, bg_t = src["image"][0][src["label"][0] == 0], tgt["image"][0][tgt["label"][0] == 0]
    assert abs(np.median(bg_s) - np.median(bg_t)) > 0.1 or abs(bg_s.std() - bg_t.std()) > 0.03
    inv = synth_em(3, "target", invert=True)
    assert inv["image"][0][inv["label"][0] > 0].mean() > inv["image"][0][inv["label"][0] == 0].mean()


def test_em_volume():
    s = synth_em(5, "source", shape=(6, 64, 80))
    assert s["image"].shape == (1, 6, 64, 80) and s["label"].shape == (1, 6, 64, 80)
    _check_instances(s["label"][0])
    assert s["points"].shape[1] == 3 and s["gt_points"].shape == (s["label"].max(), 3)
    per_slice = sparse_points(s["label"], 0.5, seed=0, per_slice=True)
    z = np.rint(per_slice).astype(int)
    assert (s["label"][0][z[:, 0], z[:, 1], z[:, 2]] > 0).all()


def test_rosette_ground_truth_matches_image(samples):
    s = samples["rosette"]
    lab, img = s["label"][0], s["image"]
    fg = lab > 0
    assert np.array_equal(s["fg"][0] > 0, fg) and s["fg"].dtype == np.uint8
    green = img[1] - 0.5 * (img[0] + img[2])
    assert green[fg].mean() > green[~fg].mean() + 0.1, "leaves are green, soil is brown"
    assert 6 <= lab.max() <= ROSETTE_DEFAULTS["leaves"][1]
    touching = (lab[:, 1:] != lab[:, :-1]) & (lab[:, 1:] > 0) & (lab[:, :-1] > 0)
    assert touching.sum() > 50, "leaves touch / overlap"


def test_unknown_knob_raises():
    for gen, knobs in ((synth_he_tile, HE_DEFAULTS), (synth_fluorescence, FLUO_DEFAULTS)):
        with pytest.raises(ValueError, match="unknown"):
            gen(0, not_a_knob=1)
        assert "density" in knobs
    with pytest.raises(ValueError):
        synth_em(0, domain="other")


def test_shapes_and_knobs():
    s = synth_he_tile(0, shape=(96, 128), density=0.1)
    assert s["image"].shape == (3, 96, 128) and s["label"].shape == (1, 96, 128)
    r = synth_rosette(0, shape=(120, 100), leaves=(4, 4))
    assert r["label"].max() <= 4 and r["image"].shape == (3, 120, 100)


def test_make_dataset():
    d = make_dataset("coin", 3, seed=7, shape=(64, 64))
    assert [x["meta"]["id"] for x in d] == ["he_0000", "he_0001", "he_0002"]
    assert [x["meta"]["seed"] for x in d] == sample_seeds(7, 3)
    d2 = make_dataset("he", 2, seed=7, shape=(64, 64))
    assert np.array_equal(d[1]["image"], d2[1]["image"]), "sample k does not depend on n"
    e = make_dataset("em", 1, seed=1, shape=(48, 48), domain="target")
    assert e[0]["meta"]["id"] == "em_target_0000" and e[0]["meta"]["domain"] == "target"
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        make_dataset("xray", 1)


def test_label_helpers():
    lab = np.zeros((10, 12), np.int32)
    lab[1:4, 1:4] = 1
    lab[6:9, 1:3] = 1  # a smaller second piece of id 1
    lab[2:8, 6:10] = 2
    lab[0, 11] = 3  # a 1-pixel id
    out = keep_largest_parts(lab, min_size=2)
    assert (out == 1).sum() == 9 and (out == 2).sum() == 24 and not (out == 3).any()
    ids, pts = inside_points(out)
    assert ids.tolist() == [1, 2] and np.allclose(pts[0], [2, 2])
    ring = np.zeros((21, 21), np.int32)
    yy, xx = np.mgrid[:21, :21]
    ring[(np.hypot(yy - 10, xx - 10) < 9) & (np.hypot(yy - 10, xx - 10) > 5)] = 4
    _, p = inside_points(ring)  # the centroid is in the hole: an interior pixel is used instead
    assert ring[int(p[0, 0]), int(p[0, 1])] == 4
    assert len(sparse_points(np.zeros((5, 5), np.int32), 0.5)) == 0
