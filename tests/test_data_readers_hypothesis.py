"""Property-based tests: random valid inputs round-trip, random invalid inputs give DataError, never a crash or a
silently wrong shape."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monai_ext.data import A431Reader, CVPPPReader, EMReader, FolderReader, MoNuSegReader, PngInstanceReader
from monai_ext.data import writers as W
from monai_ext.errors import DataError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
small = st.integers(min_value=2, max_value=12)


def _tmp():
    return tempfile.TemporaryDirectory()


def _ok_sample(sample, spatial, channels=None):
    img = sample["image"]
    assert img.dtype == np.float32 and img.shape[1:] == tuple(spatial)
    if channels is not None:
        assert img.shape[0] == channels
    assert np.isfinite(img).all()
    if "label" in sample:
        assert sample["label"].dtype == np.int32 and sample["label"].shape == (1, *spatial)


@SETTINGS
@given(lab=st.tuples(small, small).flatmap(
    lambda s: arrays(np.int32, s, elements=st.integers(-1, 65535))))
def test_coin_png_roundtrip(lab):
    with _tmp() as d:
        W.write_png_instance(d, "x", np.zeros(lab.shape + (3,), np.uint8), lab)
        sample = PngInstanceReader(d, allow_empty=True)[0]
        np.testing.assert_array_equal(sample["label"][0], lab)


@SETTINGS
@given(lab=st.tuples(small, small).flatmap(lambda s: arrays(np.int32, s, elements=st.integers(-1, 2**31 - 1))))
def test_tif_label_roundtrip(lab):
    with _tmp() as d:
        W.write_folder_pair(d, "x", np.zeros(lab.shape, np.uint8), lab)
        np.testing.assert_array_equal(FolderReader(d, allow_empty=True)[0]["label"][0], lab)


@SETTINGS
@given(lab=st.tuples(small, small).flatmap(lambda s: arrays(np.uint8, s, elements=st.integers(0, 255))))
def test_cvppp_palette_roundtrip(lab):
    with _tmp() as d:
        W.write_cvppp(Path(d) / "A1", "plant001", np.zeros(lab.shape + (3,), np.uint8), lab)
        np.testing.assert_array_equal(CVPPPReader(d, allow_empty=True)[0]["label"][0], lab)


_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int16, np.int32, np.uint32, np.float32, np.float64])


@SETTINGS
@given(dtype=_DTYPES, h=small, w=small, c=st.integers(0, 6), suffix=st.sampled_from([".tif", ".png"]),
       bad=st.sampled_from([None, np.nan, np.inf]), seed=st.integers(0, 2**16))
def test_random_image_arrays(dtype, h, w, c, suffix, bad, seed):
    shape = (h, w) if c == 0 else (h, w, c)
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        arr = rng.random(shape).astype(dtype)
        if bad is not None:
            arr.reshape(-1)[0] = bad
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    with _tmp() as d:
        try:
            W.write_folder_pair(d, "x", arr, np.ones((h, w), np.int32), image_ext=suffix)
        except ValueError:
            return  # the writer refuses what the format cannot hold (e.g. float png)
        try:
            sample = FolderReader(d)[0]
        except DataError as exc:
            assert "images" in str(exc)  # names the image file
            return
        channels = 1 if c == 0 else c
        _ok_sample(sample, (h, w), channels)
        assert dtype in (np.uint8, np.uint16, np.float32, np.float64) and channels <= 4
        assert bad is None or not np.issubdtype(dtype, np.floating)
        if dtype in (np.uint8, np.uint16):
            scale = np.iinfo(dtype).max
            expect = arr.astype(np.float64) / scale
            np.testing.assert_allclose(sample["image"], expect.reshape(h, w, -1).transpose(2, 0, 1), atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt EXIF it then rejects
@SETTINGS
@given(data=st.binary(min_size=0, max_size=300), suffix=st.sampled_from([".tif", ".png", ".jpg"]),
       header=st.sampled_from([b"", b"II*\x00", b"\x89PNG\r\n\x1a\n"]))
def test_random_bytes_never_crash(data, suffix, header):
    with _tmp() as d:
        W.write_folder_pair(d, "x", np.zeros((4, 4), np.uint8), np.ones((4, 4), np.int32))
        img = Path(d) / "images" / f"x{suffix}"
        (Path(d) / "images" / "x.tif").unlink()
        img.write_bytes(header + data)
        try:
            sample = FolderReader(d)[0]
        except DataError as exc:
            assert str(img) in str(exc)
        else:
            _ok_sample(sample, (4, 4))


@SETTINGS
@given(points=arrays(np.float64, st.tuples(st.integers(0, 6), st.just(2)), elements=st.floats(-5, 30)),
       h=st.integers(8, 24), w=st.integers(8, 24))
def test_a431_points_inside_or_error(points, h, w):
    inside = bool(np.all((points >= -0.5) & (points < np.array([h, w]) - 0.5)))
    with _tmp() as d:
        W.write_a431(d, [{"image": np.zeros((h, w), np.uint8), "locations": points}])
        reader = A431Reader(d, allow_empty=True)
        try:
            sample = reader[0]
        except DataError as exc:
            assert not inside and "outside the image" in str(exc) and "train.json" in str(exc)
        else:
            assert inside
            np.testing.assert_array_equal(sample["points"], points.astype(np.float32))


vertex = st.tuples(st.floats(-15, 45, allow_nan=False), st.floats(-15, 45, allow_nan=False))


@SETTINGS
@given(polys=st.lists(st.lists(vertex, min_size=0, max_size=7), min_size=0, max_size=5))
def test_monuseg_random_polygons(polys):
    regions = "".join(
        f'<Region Id="{k}"><Vertices>' + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in p) + "</Vertices></Region>"
        for k, p in enumerate(polys, start=1))
    with _tmp() as d:
        W.write_image(Path(d) / "a.tif", np.zeros((30, 30, 3), np.uint8))
        (Path(d) / "a.xml").write_text(f"<Annotations><Annotation><Regions>{regions}</Regions></Annotation>"
                                       "</Annotations>")
        try:
            sample = MoNuSegReader(d, allow_empty=True)[0]
        except DataError as exc:
            assert "a.xml" in str(exc)
            return
        _ok_sample(sample, (30, 30), 3)
        assert set(np.unique(sample["label"]).tolist()) <= set(range(len(polys) + 1))


@SETTINGS
@given(shape=st.tuples(st.integers(1, 5), st.integers(3, 14), st.integers(3, 14)),
       patch=st.tuples(st.integers(1, 6), st.integers(1, 16), st.integers(1, 16)),
       fmt=st.sampled_from(["tif", "h5"]))
def test_em_patches_tile_the_volume(shape, patch, fmt):
    vol = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    with _tmp() as d:
        W.write_em_volume(Path(d) / f"v.{fmt}", vol)
        W.write_em_volume(Path(d) / f"v_label.{fmt}", vol.astype(np.uint32), key="label")
        reader = EMReader(d, mode="3d", patch_size=patch)
        covered = np.zeros(shape, bool)
        for rec in reader.datalist():
            z0, z1, y0, y1, x0, x1 = rec["roi"]
            s = reader.load(rec)
            _ok_sample(s, (z1 - z0, y1 - y0, x1 - x0), 1)
            np.testing.assert_array_equal(s["label"][0], vol[z0:z1, y0:y1, x0:x1])
            covered[z0:z1, y0:y1, x0:x1] = True
        assert covered.all()
        r2 = EMReader(d)
        assert len(r2.datalist()) == shape[0]
        np.testing.assert_array_equal(r2.load(r2.datalist()[-1])["label"][0], vol[-1])


@SETTINGS
@given(entries=st.lists(st.one_of(
    st.none(), st.integers(), st.text(max_size=5),
    st.fixed_dictionaries({"image_file": st.sampled_from(["train/img_0000.tif", "x.tif", 3]),
                           "locations": st.one_of(st.just([]), st.lists(st.lists(st.floats(0, 5), max_size=3),
                                                                         max_size=3))})), max_size=3))
def test_a431_random_json_entries(entries):
    with _tmp() as d:
        out = W.write_a431(d, [{"image": np.zeros((8, 8), np.uint8), "locations": [[1, 1]]}])
        out["train_json"].write_text(json.dumps(entries))
        try:
            reader = A431Reader(d, allow_empty=True)
            for rec in reader.datalist():
                _ok_sample(reader.load(rec), (8, 8), 1)
        except DataError as exc:
            assert "train.json" in str(exc) or str(d) in str(exc)
