# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Embedded sample data: a small synthetic dataset per bundle, written in that bundle's real on-disk format.

Each bundle's default ``dataset_dir`` is :func:`ensure_sample_data` ``(<bundle>)``, so a fresh checkout trains
without downloads, and the dataset readers are exercised on every run (the files are written with
:mod:`monai_ext.data.writers`, read back with :mod:`monai_ext.data.readers`).

Location: ``<root>/sample/<bundle>[-<variant>]`` with ``root`` = argument, else ``$WEAKLABEL_CACHE``, else
``~/.cache/weaklabel-bundles``. A dataset is generated into a temporary sibling folder and renamed into place under a
file lock, so concurrent processes (pytest-xdist workers, torchrun ranks) never see a half-written dataset; the
hidden marker file ``.weaklabel_sample.json`` holds a fingerprint (layout version + generator knobs + sizes), and a
dataset with another fingerprint is regenerated.

Layouts (sizes in :data:`SAMPLE_SPECS`)::

    coin_histopathology/            MoNuSeg: RGB tif + Aperio XML polygons
        train/Tissue Images/<stem>.tif   train/Annotations/<stem>.xml     ("MoNuSeg 2018 Training Data" layout)
        test/<stem>.tif  test/<stem>.xml                                    (MoNuSegTestData layout)
    point_fluorescence/             A431: cytoplasm channel, uint8 tif
        train.json  (image_file, mask_file, locations = blob-detected nuclei [[y, x], ...], img_id)
        train/img_<k>.tif  train/mask_<k>.tif   test/img_<k>.tif  test/masks_<k>.tif
    point_fluorescence-livecell/    (variant="livecell") LIVECell COCO: annotations/LIVECell/livecell_coco_
        {train,val,test}.json + images/livecell_{train_val,test}_images/<line>/<file>.tif
    em_mito_wda/
        source/training.tif  source/training_groundtruth.tif      (Lucchi: uint8 stack + binary 0/255 mask stack)
        target/target_train.h5 (raw)  target/target_train_points.csv  (z,y,x: 15 % of the instances of each slice)
        target/target_test.h5 (raw + label: uint16 instance ids)         (evaluation only)
    spoco_sparse/                   CVPPP A1: plant<k>_rgb.png (RGBA), plant<k>_label.png (palette), plant<k>_fg.png
        train/A1/  val/A1/  test/A1/

Command line: ``python -m monai_ext.data.sample coin [--root DIR] [--force]`` prints the dataset folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SAMPLE_VERSION",
    "SAMPLE_SPECS",
    "BUNDLES",
    "canonical_bundle",
    "cache_root",
    "sample_dir",
    "ensure_sample_data",
    "write_sample_dataset",
    "is_current",
]

#: Bump when a layout or a generator changes in a way the knob fingerprint does not show.
SAMPLE_VERSION = "1"
MARKER = ".weaklabel_sample.json"

BUNDLES = ("coin_histopathology", "point_fluorescence", "em_mito_wda", "spoco_sparse")
_ALIASES = {
    "coin": "coin_histopathology",
    "coin_histopathology": "coin_histopathology",
    "points": "point_fluorescence",
    "point": "point_fluorescence",
    "cks": "point_fluorescence",
    "lacss": "point_fluorescence",
    "point_fluorescence": "point_fluorescence",
    "em": "em_mito_wda",
    "wda": "em_mito_wda",
    "em_mito_wda": "em_mito_wda",
    "spoco": "spoco_sparse",
    "cvppp": "spoco_sparse",
    "spoco_sparse": "spoco_sparse",
}
_VARIANTS = {"coin_histopathology": (None,), "point_fluorescence": (None, "a431", "livecell"),
             "em_mito_wda": (None,), "spoco_sparse": (None,)}

#: Sizes and seeds of every sample dataset (small: a bundle trains on it in a few CPU minutes).
SAMPLE_SPECS: dict[str, dict[str, Any]] = {
    "coin_histopathology": {"seed": 11, "shape": [256, 256], "train": 8, "test": 4},
    "point_fluorescence": {"seed": 22, "shape": [256, 256], "train": 12, "val": 2, "test": 4},
    "em_mito_wda": {"seed": 33, "source_shape": [12, 192, 192], "target_shape": [12, 192, 192],
                    "test_shape": [6, 192, 192], "point_fraction": 0.15},
    "spoco_sparse": {"seed": 44, "shape": [256, 256], "train": 12, "val": 4, "test": 4},
}


# ------------------------------------------------------------------------------------------------ locations
def canonical_bundle(bundle: str) -> str:
    """Full bundle name for a name or alias (``coin``, ``points``, ``em``, ``spoco``)."""
    key = str(bundle).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"unknown bundle {bundle!r}; expected one of {', '.join(BUNDLES)} "
                         "(or coin / points / em / spoco)")
    return _ALIASES[key]


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$WEAKLABEL_CACHE``, else ``~/.cache/weaklabel-bundles`` (not created)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("WEAKLABEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "weaklabel-bundles"


def _check_variant(name: str, variant: str | None) -> str | None:
    if variant is not None:
        variant = str(variant).lower()
    if variant not in _VARIANTS[name]:
        raise ValueError(f"{name} has no sample variant {variant!r}; choose from {_VARIANTS[name]}")
    return None if variant == "a431" else variant


def sample_dir(bundle: str, root: str | os.PathLike | None = None, variant: str | None = None) -> Path:
    """Where the sample dataset of ``bundle`` lives (``<root>/sample/<bundle>[-<variant>]``); nothing is written."""
    name = canonical_bundle(bundle)
    variant = _check_variant(name, variant)
    return cache_root(root) / "sample" / (name if variant is None else f"{name}-{variant}")


def fingerprint(bundle: str, variant: str | None = None) -> str:
    """Hash of the layout version, the sample sizes and the generator knobs behind ``bundle``'s sample data."""
    from . import synthetic as syn

    name = canonical_bundle(bundle)
    knobs = {
        "coin_histopathology": syn.HE_DEFAULTS,
        "point_fluorescence": syn.FLUO_DEFAULTS,
        "em_mito_wda": {"shared": syn.EM_DEFAULTS, "domains": syn.EM_DOMAINS},
        "spoco_sparse": syn.ROSETTE_DEFAULTS,
    }[name]
    blob = json.dumps([SAMPLE_VERSION, name, variant, SAMPLE_SPECS[name], knobs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_current(path: str | os.PathLike, bundle: str, variant: str | None = None) -> bool:
    """Whether ``path`` holds a complete sample dataset of ``bundle`` with the current fingerprint."""
    marker = Path(path) / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    name = canonical_bundle(bundle)
    return info.get("bundle") == name and info.get("fingerprint") == fingerprint(name, _check_variant(name, variant))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``lock_path`` (POSIX ``flock``; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename below still prevents half-written datasets
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_sample_data(
    bundle: str, root: str | os.PathLike | None = None, force: bool = False, variant: str | None = None
) -> str:
    """Return the sample dataset folder of ``bundle``, generating it first if absent, stale or ``force``.

    Args:
        bundle: ``coin_histopathology``, ``point_fluorescence``, ``em_mito_wda``, ``spoco_sparse`` or an alias
            (``coin``, ``points``, ``em``, ``spoco``).
        root: cache root (default ``$WEAKLABEL_CACHE`` or ``~/.cache/weaklabel-bundles``); data goes to
            ``<root>/sample/<bundle>``.
        force: regenerate even if a current dataset exists.
        variant: ``point_fluorescence`` only: ``"a431"`` (default) or ``"livecell"`` (LIVECell COCO layout, in
            ``<bundle>-livecell``).

    Returns:
        The dataset folder as a string (ready for a bundle's ``dataset_dir``).
    """
    name = canonical_bundle(bundle)
    variant = _check_variant(name, variant)
    target = sample_dir(name, root, variant)
    if not force and is_current(target, name, variant):
        return str(target)
    base = target.parent
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / f".{target.name}.lock"):
        if not force and is_current(target, name, variant):  # another process made it while we waited
            return str(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=base))
        old = base / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            write_sample_dataset(name, tmp, variant=variant)
            if target.exists():
                os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:  # lost a race without a lock: keep the winner's dataset if it is complete
                if not is_current(target, name, variant):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return str(target)


# ------------------------------------------------------------------------------------------------ writers
def _u8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8."""
    return np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _write_coin(out: Path, spec: dict[str, Any], variant: str | None) -> dict[str, Any]:
    from .synthetic import make_dataset
    from .writers import write_monuseg

    n_tr, n_te = spec["train"], spec["test"]
    data = make_dataset("he", n_tr + n_te, seed=spec["seed"], shape=tuple(spec["shape"]))
    files = []
    for k, s in enumerate(data):  # a dozen tiles
        split = "train" if k < n_tr else "test"
        stem = f"TCGA-SY-{k:04d}-01Z-00-DX1"
        layout = "official" if split == "train" else "flat"
        p = write_monuseg(out / split, stem, _u8(s["image"]).transpose(1, 2, 0), s["label"][0], layout=layout)
        files += [p["image"], p["annotation"]]
    return {"train": n_tr, "test": n_te, "files": len(files)}


def _write_points(out: Path, spec: dict[str, Any], variant: str | None) -> dict[str, Any]:
    from .synthetic import make_dataset
    from .writers import write_a431, write_livecell

    n_tr, n_va, n_te = spec["train"], spec.get("val", 0), spec["test"]
    data = make_dataset("fluorescence", n_tr + n_va + n_te, seed=spec["seed"], shape=tuple(spec["shape"]))
    if variant == "livecell":
        lines = ("A172", "BT474", "SkBr3")
        parts = {"train": data[:n_tr], "val": data[n_tr:n_tr + n_va], "test": data[n_tr + n_va:]}
        for split, items in parts.items():
            if items:
                write_livecell(out, [{"image": _u8(s["image"][0]), "label": s["label"][0],
                                      "cell_line": lines[k % len(lines)],
                                      "file_name": f"{lines[k % len(lines)]}_Phase_A7_1_00d00h00m_{split}{k}.tif"}
                                     for k, s in enumerate(items)], split=split)
        return {"train": n_tr, "val": n_va, "test": n_te, "variant": "livecell"}
    # A431: no val split in the release; the val samples join train
    train = [{"image": _u8(s["image"][0]), "mask": s["label"][0], "locations": s["points"]}
             for s in data[:n_tr + n_va]]
    test = [(_u8(s["image"][0]), s["label"][0]) for s in data[n_tr + n_va:]]
    write_a431(out, train, test)
    npts = int(sum(len(t["locations"]) for t in train))
    return {"train": len(train), "test": len(test), "points": npts}


def _write_em(out: Path, spec: dict[str, Any], variant: str | None) -> dict[str, Any]:
    from .synthetic import sample_seeds, sparse_points, synth_em
    from .writers import write_em_volume, write_points

    s_src, s_tgt, s_test, s_pts = sample_seeds(spec["seed"], 4)
    src = synth_em(s_src, "source", tuple(spec["source_shape"]), point_fraction=0.0)
    tgt = synth_em(s_tgt, "target", tuple(spec["target_shape"]), point_fraction=0.0)
    tst = synth_em(s_test, "target", tuple(spec["test_shape"]), point_fraction=0.0)
    # source: Lucchi-style tif stacks, binary 0/255 ground truth (the reader turns it into connected components)
    write_em_volume(out / "source" / "training.tif", _u8(src["image"][0]))
    write_em_volume(out / "source" / "training_groundtruth.tif", ((src["label"][0] > 0) * 255).astype(np.uint8))
    # target: h5 volumes (MitoEM-like keys), sparse points per slice, labelled test volume
    write_em_volume(out / "target" / "target_train.h5", _u8(tgt["image"][0]), key="raw")
    pts = sparse_points(tgt["label"][0], spec["point_fraction"], s_pts, per_slice=True)
    write_points(out / "target" / "target_train_points.csv", pts)
    write_em_volume(out / "target" / "target_test.h5", _u8(tst["image"][0]), key="raw")
    write_em_volume(out / "target" / "target_test.h5", tst["label"][0].astype(np.uint16), key="label")
    n_tgt = sum(len(np.unique(z[z > 0])) for z in tgt["label"][0])
    return {"source_instances": src["meta"]["n_instances"], "target_slice_instances": int(n_tgt),
            "target_points": int(len(pts)), "test_instances": tst["meta"]["n_instances"]}


def _write_spoco(out: Path, spec: dict[str, Any], variant: str | None) -> dict[str, Any]:
    from .synthetic import make_dataset
    from .writers import write_cvppp

    sizes = {"train": spec["train"], "val": spec["val"], "test": spec["test"]}
    data = make_dataset("rosette", sum(sizes.values()), seed=spec["seed"], shape=tuple(spec["shape"]))
    k = 0
    for split, n in sizes.items():
        for _ in range(n):  # a few dozen images
            s = data[k]
            k += 1
            write_cvppp(out / split / "A1", f"plant{k:03d}", _u8(s["image"]).transpose(1, 2, 0), s["label"][0])
    return dict(sizes)


_WRITERS: dict[str, Callable[[Path, dict[str, Any], str | None], dict[str, Any]]] = {
    "coin_histopathology": _write_coin,
    "point_fluorescence": _write_points,
    "em_mito_wda": _write_em,
    "spoco_sparse": _write_spoco,
}


def write_sample_dataset(
    bundle: str, out_dir: str | os.PathLike, variant: str | None = None, spec: dict[str, Any] | None = None
) -> Path:
    """Write ``bundle``'s sample dataset into ``out_dir`` (created; no caching, no locking) with its marker file.

    ``spec`` overrides entries of :data:`SAMPLE_SPECS` (e.g. ``{"shape": [1000, 1000], "test": 8}`` for speed
    benchmarks at a dataset's standard image size).

    Used by :func:`ensure_sample_data`; call it directly to write a copy elsewhere (e.g. a test's ``tmp_path``).
    """
    name = canonical_bundle(bundle)
    variant = _check_variant(name, variant)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = {**SAMPLE_SPECS[name], **(spec or {})}
    summary = _WRITERS[name](out, spec, variant)
    info = {
        "bundle": name,
        "variant": variant,
        "version": SAMPLE_VERSION,
        "fingerprint": fingerprint(name, variant),
        "spec": spec,
        "summary": summary,
        "seconds": round(time.perf_counter() - t0, 2),
        "generator": "monai_ext.data.sample",
    }
    (out / MARKER).write_text(json.dumps(info, indent=1, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m monai_ext.data.sample BUNDLE [--root DIR] [--force] [--variant V]``: print the dataset folder."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m monai_ext.data.sample", description=main.__doc__)
    ap.add_argument("bundle", nargs="?", default="all", help=f"one of {', '.join(BUNDLES)}, an alias, or 'all'")
    ap.add_argument("--root", default=None, help="cache root (default $WEAKLABEL_CACHE or ~/.cache/weaklabel-bundles)")
    ap.add_argument("--force", action="store_true", help="regenerate")
    ap.add_argument("--variant", default=None, help="point_fluorescence: a431 (default) or livecell")
    args = ap.parse_args(argv)
    names = BUNDLES if args.bundle == "all" else (args.bundle,)
    for b in names:
        print(ensure_sample_data(b, root=args.root, force=args.force, variant=args.variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
