"""Malformed input gives a DataError that names the file and the problem (or a logged skip where documented)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from monai_ext.data import (
    A431Reader,
    CVPPPReader,
    EMReader,
    FolderReader,
    LiveCellReader,
    MoNuSegReader,
    PngInstanceReader,
)
from monai_ext.data import writers as W
from monai_ext.data.readers.files import read_points
from monai_ext.errors import DataError

SHAPE = (32, 40)


def label(n=2):
    lab = np.zeros(SHAPE, np.int32)
    for i in range(1, n + 1):
        lab[4 * i: 4 * i + 3, 5 * i: 5 * i + 4] = i
    return lab


def rgb(shape=SHAPE):
    return np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)


def raises(path: Path | str, *words: str):
    """Context manager: DataError whose message names ``path`` and contains every word."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(DataError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert str(path) in msg, msg
            for w in words:
                assert w.lower() in msg.lower(), msg
            return out

    return _Ctx()


def load_all(reader):
    return [reader.load(r) for r in reader.datalist()]


# ------------------------------------------------------------------------------------------ generic image files
def folder_with(tmp_path, image_name="a.tif", image=None, lab=None):
    W.write_folder_pair(tmp_path, "a", rgb() if image is None else image, label() if lab is None else lab)
    return tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif"


def test_corrupt_truncated_and_empty_images(tmp_path):
    img, _ = folder_with(tmp_path)
    img.write_bytes(b"not a tiff at all")
    with raises(img, "unreadable"):
        load_all(FolderReader(tmp_path))
    img.write_bytes(b"")
    with raises(img, "empty"):
        load_all(FolderReader(tmp_path))
    img.unlink()
    W.write_image(img.with_suffix(".png"), rgb())
    data = img.with_suffix(".png").read_bytes()
    img.with_suffix(".png").write_bytes(data[: len(data) // 2])
    with raises(img.with_suffix(".png"), "unreadable"):
        load_all(FolderReader(tmp_path))


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint32])
def test_unsupported_image_dtype(tmp_path, dtype):
    img, _ = folder_with(tmp_path, image=np.ones(SHAPE, dtype))
    with raises(img, "dtype"):
        load_all(FolderReader(tmp_path))


def test_nan_pixels_and_float_images(tmp_path):
    arr = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    img, _ = folder_with(tmp_path, image=arr)
    np.testing.assert_allclose(FolderReader(tmp_path)[0]["image"][0], arr)  # finite floats are kept
    arr[3, 4] = np.nan
    W.write_image(img, arr)
    with raises(img, "NaN"):
        load_all(FolderReader(tmp_path))


def test_wrong_channel_count(tmp_path):
    img, _ = folder_with(tmp_path, image=np.zeros(SHAPE + (2,), np.uint8))
    with raises(img, "channels"):
        load_all(FolderReader(tmp_path, channels=3))
    W.write_image(img, np.zeros(SHAPE + (6,), np.uint8))
    with raises(img, "at most 4 channels"):
        load_all(FolderReader(tmp_path))


def test_label_problems(tmp_path):
    _, lab = folder_with(tmp_path)
    W.write_label(lab, np.zeros((SHAPE[0] + 1, SHAPE[1]), np.int32))
    with raises(lab, "does not match image shape"):
        load_all(FolderReader(tmp_path))
    W.write_label(lab, np.zeros(SHAPE, np.int32))
    with raises(lab, "no instances", "allow_empty"):
        load_all(FolderReader(tmp_path))
    assert (FolderReader(tmp_path, allow_empty=True)[0]["label"] == 0).all()
    W.write_image(lab, label().astype(np.float32) + 0.5)
    with raises(lab, "non-integer"):
        load_all(FolderReader(tmp_path))
    W.write_label(lab, np.full(SHAPE, -3))
    with raises(lab, "negative"):
        load_all(FolderReader(tmp_path))


def test_folder_missing_pairs_and_duplicates(tmp_path):
    img, lab = folder_with(tmp_path)
    W.write_image(tmp_path / "images" / "b.png", rgb())
    with raises(tmp_path / "images" / "b.png", "missing pair"):
        FolderReader(tmp_path).datalist()
    (tmp_path / "images" / "b.png").unlink()
    W.write_label(tmp_path / "labels" / "zz.tif", label())
    with raises(tmp_path / "labels" / "zz.tif", "no matching image"):
        FolderReader(tmp_path).datalist()
    (tmp_path / "labels" / "zz.tif").unlink()
    W.write_image(tmp_path / "images" / "a.png", rgb())
    with raises(tmp_path / "images", "two image files", "'a'"):
        FolderReader(tmp_path).datalist()


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with raises(tmp_path / "images", "empty"):
        FolderReader(tmp_path).datalist()
    with raises(tmp_path / "nothing", "does not exist"):
        FolderReader(tmp_path / "nothing")
    with raises(tmp_path / "x", "no MoNuSeg files"):
        (tmp_path / "x").mkdir()
        MoNuSegReader(tmp_path / "x").datalist()


# ------------------------------------------------------------------------------------------------------ points
@pytest.mark.parametrize("content,words", [
    ("y,x\n1,a\n", ["non-numeric"]),
    ("a,b\n1,2\n", ["lacks column"]),
    ("y,x\n1,2,3\n", ["columns"]),
    ("y,x\nnan,2\n", ["NaN"]),
])
def test_bad_csv_points(tmp_path, content, words):
    p = tmp_path / "p.csv"
    p.write_text(content)
    with raises(p, *words):
        read_points(p)


@pytest.mark.parametrize("content,words", [
    ("{bad json", ["unreadable"]),
    ('{"pts": []}', ["points"]),
    ("[[1, 2, 3, 4]]", ["[y, x]"]),
    ('[["a", 1]]', ["numeric"]),
])
def test_bad_json_points(tmp_path, content, words):
    p = tmp_path / "p.json"
    p.write_text(content)
    with raises(p, *words):
        read_points(p)


def test_points_outside_image_folder(tmp_path):
    folder_with(tmp_path)
    p = W.write_points(tmp_path / "points" / "a.json", [[1, 1], [SHAPE[0] + 3, 2]])
    with raises(p, "outside the image"):
        load_all(FolderReader(tmp_path))


# ------------------------------------------------------------------------------------------------------ MoNuSeg
def monuseg(tmp_path, n=2):
    return W.write_monuseg(tmp_path, "TCGA-1", rgb(), label(n))


def test_monuseg_missing_pairs(tmp_path):
    out = monuseg(tmp_path)
    out["image"].unlink()
    with raises(out["annotation"], "missing pair"):
        MoNuSegReader(tmp_path).datalist()
    out = monuseg(tmp_path)
    out["annotation"].unlink()
    with raises(out["image"], "missing pair"):
        MoNuSegReader(tmp_path).datalist()


@pytest.mark.parametrize("xml,words", [
    ("<Annotations><Annotation>", ["malformed"]),
    ("<Foo/>", ["not an Aperio"]),
    ("<Annotations><Annotation><Regions/></Annotation></Annotations>", ["no <Region>"]),
    ('<Annotations><Annotation><Regions><Region Id="4"><Vertices><Vertex X="a" Y="1"/></Vertices></Region>'
     "</Regions></Annotation></Annotations>", ["Id=4", "numeric"]),
    ('<Annotations><Annotation><Regions><Region Id="1"><Vertices><Vertex X="1" Y="1"/><Vertex X="900" Y="1"/>'
     '<Vertex X="5" Y="9"/></Vertices></Region></Regions></Annotation></Annotations>', ["out of bounds"]),
    ('<Annotations><Annotation><Regions><Region Id="1"><Vertices><Vertex X="1" Y="1"/><Vertex X="3" Y="1"/>'
     "</Vertices></Region></Regions></Annotation></Annotations>", ["no usable polygon"]),
])
def test_monuseg_bad_xml(tmp_path, xml, words):
    out = monuseg(tmp_path)
    out["annotation"].write_text(xml)
    with raises(out["annotation"], *words):
        load_all(MoNuSegReader(tmp_path))


def test_monuseg_skips_degenerate_region_with_warning(tmp_path, caplog):
    out = monuseg(tmp_path)
    text = out["annotation"].read_text().replace(
        "</Regions>", '<Region Id="99"><Vertices><Vertex X="1" Y="1"/></Vertices></Region></Regions>')
    out["annotation"].write_text(text)
    with caplog.at_level(logging.WARNING):
        sample = MoNuSegReader(tmp_path)[0]
    assert "Id=99" in caplog.text and str(out["annotation"]) in caplog.text
    assert len(np.unique(sample["label"])) == 3


def test_monuseg_grayscale_image_is_rejected(tmp_path):
    out = monuseg(tmp_path)
    W.write_image(out["image"], rgb()[..., 0])
    with raises(out["image"], "RGB"):
        load_all(MoNuSegReader(tmp_path))


# ------------------------------------------------------------------------------------------------ PNG instance
def test_png_instance_missing_pairs(tmp_path):
    out = W.write_png_instance(tmp_path, "a", rgb(), label())
    out["label"].unlink()
    with raises(out["image"], "missing pair"):
        PngInstanceReader(tmp_path).datalist()
    out = W.write_tnbc(tmp_path / "t", "01_1", rgb(), label())
    W.write_image(tmp_path / "t" / "GT_02" / "02_1.png", np.zeros(SHAPE, np.uint8))
    with raises(tmp_path / "t" / "GT_02", "no image folder"):
        PngInstanceReader(tmp_path / "t").datalist()
    (tmp_path / "t" / "GT_02" / "02_1.png").unlink()
    (tmp_path / "t" / "GT_02").rmdir()
    with raises(tmp_path / "t", "test_ids not found"):
        PngInstanceReader(tmp_path / "t", test_ids=["99_9"]).datalist()


def test_coin_mask_must_be_rgb(tmp_path):
    out = W.write_png_instance(tmp_path, "a", rgb(), label(), encoding="gray")
    with raises(out["label"], "8-bit RGB"):
        load_all(PngInstanceReader(tmp_path, mask_encoding="coin"))


# ------------------------------------------------------------------------------------------------------ LIVECell
def livecell(tmp_path):
    out = W.write_livecell(tmp_path, [{"image": rgb()[..., 0], "label": label()}], annotations_as_dict=False)
    return out["annotation"], json.loads(out["annotation"].read_text())


@pytest.mark.parametrize("mutate,words", [
    (lambda d: d["images"].append(dict(d["images"][0])), ["duplicate image id"]),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), ["duplicate annotation id"]),
    (lambda d: d["annotations"][0].update(image_id=42), ["unknown image id 42"]),
    (lambda d: d["images"][0].update(file_name="missing.tif"), ["missing.tif", "not found"]),
    (lambda d: d.pop("annotations"), ["not a COCO json"]),
    (lambda d: d.update(images=[], annotations=[]), ["no images"]),
])
def test_livecell_bad_json(tmp_path, mutate, words):
    js, data = livecell(tmp_path)
    mutate(data)
    js.write_text(json.dumps(data))
    with raises(js, *words):
        LiveCellReader(tmp_path).datalist()


def test_livecell_bad_polygon_size_and_channels(tmp_path):
    js, data = livecell(tmp_path)
    data["annotations"][0]["segmentation"] = [[1, 1, 500, 1, 500, 9]]
    js.write_text(json.dumps(data))
    with raises(js, "out of bounds"):
        load_all(LiveCellReader(tmp_path))
    js.write_text("{oops")
    with raises(js, "unreadable"):
        LiveCellReader(tmp_path).datalist()
    js, data = livecell(tmp_path)
    img = next((tmp_path / "images").rglob("*.tif"))
    W.write_image(img, rgb((SHAPE[0], SHAPE[1] + 2))[..., 0])
    with raises(img, "annotations say"):
        load_all(LiveCellReader(tmp_path))
    W.write_image(img, rgb())
    with raises(img, "single-channel"):
        load_all(LiveCellReader(tmp_path))


# ---------------------------------------------------------------------------------------------------------- A431
def a431(tmp_path, locations=((3, 4),)):
    return W.write_a431(tmp_path, [{"image": rgb()[..., 0], "locations": list(locations)}],
                        [(rgb()[..., 0], label())])


@pytest.mark.parametrize("entry,words", [
    ({"image_file": "train/img_0000.tif"}, ["lacks"]),
    ({"image_file": "train/nope.tif", "locations": []}, ["does not exist"]),
    ({"image_file": "train/img_0000.tif", "locations": [[1, 2, 3]]}, ["[[y, x]"]),
    ({"image_file": "train/img_0000.tif", "locations": [[1, None]]}, ["NaN"]),
    ({"image_file": "train/img_0000.tif", "locations": [[1, 2]], "mask_file": "train/m.tif"}, ["mask_file"]),
])
def test_a431_bad_entries(tmp_path, entry, words):
    out = a431(tmp_path)
    out["train_json"].write_text(json.dumps([entry]))
    with raises(out["train_json"], *words):
        A431Reader(tmp_path).datalist()


def test_a431_duplicates_points_outside_and_missing_test_mask(tmp_path, caplog):
    out = a431(tmp_path)
    entry = {"image_file": "train/img_0000.tif", "locations": [[1, 2]]}
    out["train_json"].write_text(json.dumps([entry, entry]))
    with raises(out["train_json"], "duplicate image_file"):
        A431Reader(tmp_path).datalist()
    out["train_json"].write_text(json.dumps([{"image_file": "train/img_0000.tif", "locations": [[1, 99]]}]))
    with raises(out["train_json"], "outside the image"):
        load_all(A431Reader(tmp_path))
    out["train_json"].write_text(json.dumps([{"image_file": "train/img_0000.tif", "locations": []}]))
    with caplog.at_level(logging.WARNING):
        assert [r["split"] for r in A431Reader(tmp_path).datalist()] == ["test"]
    assert "no locations" in caplog.text
    (tmp_path / "test" / "masks_0000.tif").unlink()
    with raises(tmp_path / "test" / "img_0000.tif", "missing pair"):
        A431Reader(tmp_path).datalist()


# ------------------------------------------------------------------------------------------------------------ EM
def test_em_shape_mismatch_missing_image_and_bad_points(tmp_path):
    vol = np.zeros((3,) + SHAPE, np.uint8)
    W.write_em_volume(tmp_path / "v.tif", vol)
    W.write_em_volume(tmp_path / "v_label.tif", np.zeros((2,) + SHAPE, np.uint8))
    with raises(tmp_path / "v_label.tif", "does not match"):
        EMReader(tmp_path).datalist()
    W.write_em_volume(tmp_path / "v_label.tif", np.zeros((3,) + SHAPE, np.uint8))
    W.write_em_volume(tmp_path / "w_gt.tif", vol)
    with raises(tmp_path / "w_gt.tif", "missing pair"):
        EMReader(tmp_path).datalist()
    (tmp_path / "w_gt.tif").unlink()
    p = W.write_points(tmp_path / "v_points.csv", [[1, 2, 3], [5, 2, 3]])
    with raises(p, "outside the image"):
        EMReader(tmp_path).datalist()
    W.write_points(p, [[1, 2]])
    with raises(p, "(z, y, x)"):
        EMReader(tmp_path).datalist()


def test_em_h5_key_problems_and_corrupt_files(tmp_path):
    vol = np.zeros((2,) + SHAPE, np.uint8)
    h5 = tmp_path / "a.h5"
    with h5py.File(h5, "w") as f:
        f["foo"], f["bar"] = vol, vol
    with raises(h5, "which h5 dataset"):
        EMReader(tmp_path).datalist()
    with raises(h5, "'nope' not found"):
        EMReader(tmp_path, image_key="nope").datalist()
    assert len(EMReader(tmp_path, image_key="foo").datalist()) == 2
    h5.write_bytes(b"\x89HDF garbage")
    with raises(h5, "unreadable"):
        EMReader(tmp_path).datalist()
    h5.unlink()
    tif = W.write_em_volume(tmp_path / "b.tif", np.zeros((4, 64, 64), np.uint8))
    data = tif.read_bytes()
    tif.write_bytes(data[: len(data) // 3])
    with raises(tif, ""):
        load_all(EMReader(tmp_path))
    tif.unlink()
    W.write_em_volume(tmp_path / "c.tif", np.zeros((3,) + SHAPE, np.int32))
    with raises(tmp_path / "c.tif", "dtype"):
        EMReader(tmp_path).datalist()


def test_em_slice_folder_with_mixed_shapes(tmp_path):
    W.write_em_slices(tmp_path / "s1" / "raw", np.zeros((2,) + SHAPE, np.uint8))
    W.write_image(tmp_path / "s1" / "raw" / "0009.png", np.zeros((5, 5), np.uint8))
    with raises(tmp_path / "s1" / "raw", "differ"):
        EMReader(tmp_path).datalist()


def test_em_float_label_and_nan_volume(tmp_path):
    vol = np.random.default_rng(0).random((2,) + SHAPE).astype(np.float32)
    vol[1, 0, 0] = np.inf
    W.write_em_volume(tmp_path / "v.h5", vol, key="raw")
    W.write_em_volume(tmp_path / "v.h5", np.full((2,) + SHAPE, 0.5, np.float32), key="label")
    reader = EMReader(tmp_path)
    with raises(tmp_path / "v.h5", "non-integer"):
        reader.load(reader.datalist()[0])
    with raises(tmp_path / "v.h5", "NaN/inf"):
        reader.load(reader.datalist()[1])


# --------------------------------------------------------------------------------------------------------- CVPPP
def test_cvppp_missing_label_and_orphan(tmp_path):
    out = W.write_cvppp(tmp_path / "train" / "A1", "plant001", rgb(), label())
    out["label"].unlink()
    with raises(out["image"], "missing pair"):
        CVPPPReader(tmp_path).datalist()
    out = W.write_cvppp(tmp_path / "train" / "A1", "plant001", rgb(), label())
    out["image"].unlink()
    with raises(out["label"], "missing pair"):
        CVPPPReader(tmp_path).datalist()


def test_cvppp_h5_without_truth_and_bad_rgb(tmp_path):
    out = W.write_cvppp_h5(tmp_path, [{"name": "plant001", "rgb": rgb(), "label": label()}])
    truth = out["truth"].read_bytes()
    out["truth"].unlink()
    with raises(out["images"], "missing pair"):
        CVPPPReader(tmp_path).datalist()
    out["truth"].write_bytes(truth)
    with h5py.File(out["images"], "a") as f:
        del f["A1/plant001/rgb"]
        f["A1/plant001/rgb"] = np.zeros(SHAPE + (2,), np.uint8)
    with raises(out["images"], "RGB"):
        load_all(CVPPPReader(tmp_path))


def test_tif_stack_is_not_a_2d_image(tmp_path):
    img, _ = folder_with(tmp_path)
    tifffile.imwrite(img, np.zeros((7,) + SHAPE, np.uint8))
    with raises(img, "stack of 7 pages"):
        load_all(FolderReader(tmp_path))
