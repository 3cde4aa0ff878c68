# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Embedded sample data: written in each bundle's real format, read back by the readers, cached and regenerated."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from monai_ext.data.readers import detect_format, get_reader
from monai_ext.data.sample import (
    BUNDLES,
    MARKER,
    SAMPLE_SPECS,
    cache_root,
    canonical_bundle,
    ensure_sample_data,
    is_current,
    sample_dir,
)
from monai_ext.data.synthetic import make_dataset, sample_seeds, synth_em


def _splits(records):
    out: dict[str, int] = {}
    for r in records:
        out[r["split"]] = out.get(r["split"], 0) + 1
    return out


def _load_all(reader):
    recs = reader.datalist()
    samples = [reader.load(r) for r in recs]
    for s in samples:
        assert s["image"].dtype == np.float32 and 0 <= s["image"].min() and s["image"].max() <= 1
        if "label" in s:
            assert s["label"].shape == (1,) + s["image"].shape[1:]
        if "points" in s and len(s["points"]):
            assert (s["points"] >= -0.5).all() and (s["points"] <= np.array(s["image"].shape[1:]) - 0.5).all()
    return recs, samples


def test_coin_sample_is_monuseg():
    d = ensure_sample_data("coin")
    assert Path(d) == sample_dir("coin_histopathology") and detect_format(d) == "monuseg"
    recs, samples = _load_all(get_reader("monuseg", d))
    spec = SAMPLE_SPECS["coin_histopathology"]
    assert _splits(recs) == {"train": spec["train"], "test": spec["test"]}
    gen = make_dataset("he", spec["train"] + spec["test"], seed=spec["seed"], shape=tuple(spec["shape"]))
    for r, s in zip(recs, samples):
        g = gen[int(r["id"].split("-")[2])]
        assert np.abs(s["image"] - g["image"]).max() <= 1 / 255 + 1e-6
        agree = ((s["label"][0] > 0) == (g["label"][0] > 0)).mean()
        assert agree > 0.99 and s["label"].max() == g["label"].max()  # polygons round-trip the instances


def test_points_sample_is_a431():
    d = ensure_sample_data("points")
    assert detect_format(d) == "a431"
    recs, samples = _load_all(get_reader("a431", d))
    spec = SAMPLE_SPECS["point_fluorescence"]
    assert _splits(recs) == {"train": spec["train"] + spec["val"], "test": spec["test"]}
    train = [s for r, s in zip(recs, samples) if r["split"] == "train"]
    assert all(len(s["points"]) > 5 and "label" in s for s in train)
    # points are the blob detections of the nuclei channel, stored as written
    gen = make_dataset("fluorescence", 1, seed=spec["seed"], shape=tuple(spec["shape"]))[0]
    first = next(s for r, s in zip(recs, samples) if r["split"] == "train" and r["index"] == 0)
    assert np.allclose(first["points"], gen["points"])
    assert all("label" in s for r, s in zip(recs, samples) if r["split"] == "test")


def test_points_livecell_variant():
    d = ensure_sample_data("points", variant="livecell")
    assert d.endswith("point_fluorescence-livecell") and detect_format(d) == "livecell"
    recs, samples = _load_all(get_reader("livecell", d))
    spec = SAMPLE_SPECS["point_fluorescence"]
    assert _splits(recs) == {"train": spec["train"], "val": spec["val"], "test": spec["test"]}
    assert all(s["label"].max() > 5 for s in samples)


def test_em_sample():
    d = Path(ensure_sample_data("em"))
    info = json.loads((d / MARKER).read_text())
    src = get_reader("em", d / "source")
    recs, samples = _load_all(src)
    spec = SAMPLE_SPECS["em_mito_wda"]
    assert len(recs) == spec["source_shape"][0] and all(s["label"].max() > 0 for s in samples)
    assert all(r["domain"] == "source" for r in recs)
    tgt = get_reader("em", d / "target")
    recs, samples = _load_all(tgt)
    train = [s for r, s in zip(recs, samples) if r["split"] == "train"]
    test = [s for r, s in zip(recs, samples) if r["split"] == "test"]
    assert len(train) == spec["target_shape"][0] and len(test) == spec["test_shape"][0]
    assert all("label" not in s for s in train), "target training data has points only"
    assert sum(len(s["points"]) for s in train) == info["summary"]["target_points"] > 0
    assert all(s["label"].max() > 0 for s in test)
    # the sparse points sit inside mitochondria of the (unwritten) target ground truth, about 15 % of each slice's
    vol = get_reader("em", d / "target", mode="3d")
    rec = vol.datalist("train")[0]
    pts = vol.load(rec)["points"]
    truth = synth_em(sample_seeds(spec["seed"], 4)[1], "target", tuple(spec["target_shape"]))["label"][0]
    z, y, x = np.rint(pts).astype(int).T
    assert (truth[z, y, x] > 0).all()
    n_inst = sum(len(np.unique(sl[sl > 0])) for sl in truth)
    assert abs(len(pts) / n_inst - spec["point_fraction"]) < 0.1


def test_spoco_sample_is_cvppp():
    d = ensure_sample_data("spoco")
    assert detect_format(d) == "cvppp"
    recs, samples = _load_all(get_reader("cvppp", d))
    spec = SAMPLE_SPECS["spoco_sparse"]
    assert _splits(recs) == {"train": spec["train"], "val": spec["val"], "test": spec["test"]}
    gen = make_dataset("rosette", 1, seed=spec["seed"], shape=tuple(spec["shape"]))[0]
    first = next(s for r, s in zip(recs, samples) if r["id"].endswith("plant001"))
    assert np.array_equal(first["label"], gen["label"]), "palette label PNG round-trips exactly"


def test_cache_lifecycle(tmp_path):
    d = Path(ensure_sample_data("em", root=tmp_path))
    assert d == tmp_path / "sample" / "em_mito_wda" and is_current(d, "em")
    marker = d / MARKER
    first = marker.stat().st_mtime_ns
    assert ensure_sample_data("em_mito_wda", root=tmp_path) == str(d) and marker.stat().st_mtime_ns == first
    # stale fingerprint -> regenerated
    info = json.loads(marker.read_text())
    info["fingerprint"] = "old"
    marker.write_text(json.dumps(info))
    assert not is_current(d, "em")
    ensure_sample_data("em", root=tmp_path)
    assert is_current(d, "em")
    assert (d / "source" / "training.tif").is_file()
    # force -> regenerated (a new folder replaces the old one)
    before = (d / MARKER).stat().st_ino
    ensure_sample_data("em", root=tmp_path, force=True)
    assert (d / MARKER).stat().st_ino != before
    leftovers = [p.name for p in (tmp_path / "sample").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def _ensure_in_child(root: str, q) -> None:  # runs in a forked process
    q.put(ensure_sample_data("em", root=root))


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method")
def test_concurrent_processes_see_a_complete_dataset(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    paths = {q.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    d = Path(paths.pop())
    assert is_current(d, "em") and (d / "target" / "target_test.h5").is_file()
    assert sorted(p.name for p in (tmp_path / "sample").iterdir() if not p.name.endswith(".lock")) == ["em_mito_wda"]


def test_names_roots_and_errors(tmp_path, monkeypatch):
    assert [canonical_bundle(a) for a in ("coin", "points", "em", "spoco")] == list(BUNDLES)
    assert canonical_bundle("SPOCO-sparse") == "spoco_sparse"
    with pytest.raises(ValueError, match="unknown bundle"):
        canonical_bundle("brats")
    with pytest.raises(ValueError, match="variant"):
        sample_dir("coin", variant="livecell")
    monkeypatch.setenv("WEAKLABEL_CACHE", str(tmp_path / "c"))
    assert sample_dir("spoco") == tmp_path / "c" / "sample" / "spoco_sparse"
    monkeypatch.delenv("WEAKLABEL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "weaklabel-bundles"
    assert not os.path.exists(tmp_path / ".cache")  # nothing is written by asking
