"""Writers produce the real public formats: checked with the format's own tools, not with our readers."""

from __future__ import annotations

import csv
import json
from xml.etree import ElementTree as ET

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.draw import disk, polygon

from monai_ext.data import writers as W
from monai_ext.data.readers.codecs import cvppp_palette, decode_coin_mask, decode_palette_rgb, encode_coin_mask


def _label(shape=(48, 64), centers=((12, 14), (30, 40), (20, 52)), radius=6):
    lab = np.zeros(shape, np.int32)
    for i, c in enumerate(centers, start=1):
        rr, cc = disk(c, radius, shape=shape)
        lab[rr, cc] = i
    return lab


def _rgb(shape=(48, 64), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


def test_label_to_polygons_rasterise_back_exactly():
    lab = _label()
    lab[40:44, 2:30] = 7  # thin bar
    polys = W.label_to_polygons(lab)
    assert [i for i, _ in polys] == [1, 2, 3, 7]
    back = np.zeros_like(lab)
    for i, p in polys:
        rr, cc = polygon(p[:, 0], p[:, 1], lab.shape)
        back[rr, cc] = i
    np.testing.assert_array_equal(back, lab)


def test_monuseg_xml_is_aperio_format(tmp_path):
    lab = _label()
    out = W.write_monuseg(tmp_path, "TCGA-X", _rgb(), lab, layout="official")
    assert out["image"] == tmp_path / "Tissue Images" / "TCGA-X.tif"
    assert out["annotation"] == tmp_path / "Annotations" / "TCGA-X.xml"
    root = ET.parse(out["annotation"]).getroot()
    assert root.tag == "Annotations" and "MicronsPerPixel" in root.attrib
    regions = root.findall("./Annotation/Regions/Region")
    assert len(regions) == 3
    verts = regions[0].findall("./Vertices/Vertex")
    xs = np.array([float(v.get("X")) for v in verts])
    ys = np.array([float(v.get("Y")) for v in verts])
    assert abs(xs.mean() - 14) < 1 and abs(ys.mean() - 12) < 1  # X is the column, Y the row
    img = tifffile.imread(out["image"])
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8


def test_coin_encoding_roundtrips_ids_above_255(tmp_path):
    lab = np.array([[0, 1, 255], [256, 1000, 65535], [-1, 300, 511]], np.int32)
    rgb = encode_coin_mask(lab)
    assert rgb[1, 0].tolist() == [0, 0, 1]  # id 256: G = 0, B = 1 (RGB order)
    assert rgb[2, 0].tolist() == [255, 255, 255]  # ignore
    np.testing.assert_array_equal(decode_coin_mask(rgb), lab)
    path = W.write_coin_png_mask(tmp_path / "m.png", lab)
    arr = np.array(Image.open(path))
    assert arr.shape == (3, 3, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr[..., 2].astype(int) * 256 + arr[..., 1], np.where(lab < 0, 65535, lab))
    with pytest.raises(ValueError):
        encode_coin_mask(np.array([[65536]]))


def test_png_instance_and_tnbc_layouts(tmp_path):
    out = W.write_png_instance(tmp_path / "coin", "img1", _rgb(), _label(), split="test")
    assert out["image"].relative_to(tmp_path).as_posix() == "coin/test/image/img1.png"
    assert out["label"].relative_to(tmp_path).as_posix() == "coin/test/mask/img1.png"
    out = W.write_tnbc(tmp_path / "tnbc", "03_2", _rgb(), _label())
    assert out["image"].relative_to(tmp_path).as_posix() == "tnbc/Slide_03/03_2.png"
    gt = np.array(Image.open(out["label"]))
    assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 255}


def test_livecell_json_is_pycocotools_compatible(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    lab = _label()
    out = W.write_livecell(tmp_path, [{"image": _rgb()[..., 0], "label": lab, "cell_line": "BV2"}], split="val")
    assert out["annotation"].relative_to(tmp_path).as_posix() == "annotations/LIVECell/livecell_coco_val.json"
    data = json.loads(out["annotation"].read_text())
    assert isinstance(data["annotations"], dict)  # like the real LIVECell files
    name = data["images"][0]["file_name"]
    assert name.startswith("BV2_") and (out["images"] / "BV2" / name).is_file()
    data["annotations"] = list(data["annotations"].values())
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == 3
    for k, ann in enumerate(anns, start=1):
        m = coco.annToMask(ann).astype(bool)
        iou = (m & (lab == k)).sum() / (m | (lab == k)).sum()
        assert iou > 0.85
        assert abs(mask_utils.area(coco.annToRLE(ann)) - (lab == k).sum()) < 0.2 * (lab == k).sum()


def test_a431_layout(tmp_path):
    out = W.write_a431(tmp_path, [{"image": _rgb()[..., 0], "locations": [[1, 2], [3, 4]], "mask": _label()}],
                       [(_rgb()[..., 0], _label())])
    entries = json.loads(out["train_json"].read_text())
    assert entries[0]["image_file"] == "train/img_0000.tif" and entries[0]["locations"] == [[1, 2], [3, 4]]
    assert (tmp_path / entries[0]["mask_file"]).is_file()
    assert (tmp_path / "test" / "img_0000.tif").is_file() and (tmp_path / "test" / "masks_0000.tif").is_file()


def test_em_volume_tif_h5_and_slices(tmp_path):
    vol = np.arange(3 * 5 * 6, dtype=np.uint16).reshape(3, 5, 6)
    tif = W.write_em_volume(tmp_path / "v.tif", vol)
    with tifffile.TiffFile(tif) as t:
        assert len(t.pages) == 3
    np.testing.assert_array_equal(tifffile.imread(tif), vol)
    h5 = W.write_em_volume(tmp_path / "v.h5", vol, key="raw")
    W.write_em_volume(h5, vol.astype(np.uint32), key="label")
    with h5py.File(h5) as f:
        assert set(f) == {"raw", "label"} and f["raw"].chunks == (1, 5, 6)
        np.testing.assert_array_equal(f["label"][()], vol)
    folder = W.write_em_slices(tmp_path / "im", vol.astype(np.uint8), prefix="im")
    assert sorted(p.name for p in folder.iterdir()) == ["im0000.png", "im0001.png", "im0002.png"]


def test_points_formats(tmp_path):
    pts = np.array([[1, 2], [5, 7]], float)
    png = np.array(Image.open(W.write_points(tmp_path / "p.png", pts, shape=(8, 9))))
    np.testing.assert_array_equal(np.argwhere(png), pts)
    rows = list(csv.reader(open(W.write_points(tmp_path / "p.csv", [[0, 1, 2]]))))
    assert rows[0] == ["z", "y", "x"] and [float(v) for v in rows[1]] == [0, 1, 2]
    data = json.loads(W.write_points(tmp_path / "p.json", pts).read_text())
    assert data == {"axes": "yx", "points": pts.tolist()}
    with pytest.raises(ValueError):
        W.write_points(tmp_path / "q.png", pts)  # png needs a shape


def test_cvppp_palette_png_and_h5(tmp_path):
    pal = cvppp_palette()
    assert pal.shape == (256, 3) and pal[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in pal.tolist()}) == 256
    lab = _label()
    out = W.write_cvppp(tmp_path / "A1", "plant007", _rgb(), lab)
    im = Image.open(out["label"])
    assert im.mode == "P"
    np.testing.assert_array_equal(np.array(im), lab)
    ids, exact = decode_palette_rgb(np.array(im.convert("RGB")))
    assert exact
    np.testing.assert_array_equal(ids, lab)
    assert np.array(Image.open(out["image"])).shape == (48, 64, 4)
    assert set(np.unique(np.array(Image.open(out["fg"])))) == {0, 1}
    h5 = W.write_cvppp_h5(tmp_path, [{"name": "plant007", "rgb": _rgb(), "label": lab}])
    with h5py.File(h5["images"]) as f:
        assert f["A1/plant007/rgb"].shape == (48, 64, 4)
    with h5py.File(h5["truth"]) as f:
        np.testing.assert_array_equal(f["A1/plant007/label"][()], lab)
        assert int(f["A1/plant007/count"][()]) == 3


def test_folder_pair_and_label_dtypes(tmp_path):
    out = W.write_folder_pair(tmp_path, "s1", _rgb(), _label() * 300, image_ext=".png", label_ext=".png",
                              split="train")
    assert out["image"].relative_to(tmp_path).as_posix() == "train/images/s1.png"
    arr = np.array(Image.open(out["label"]))
    assert arr.dtype == np.uint16 and arr.max() == 900
    with pytest.raises(ValueError):
        W.write_label(tmp_path / "neg.png", np.full((4, 4), -1))
    two = W.write_image(tmp_path / "two.tif", np.zeros((6, 7, 2), np.uint8))
    assert tifffile.imread(two).shape == (6, 7, 2)
