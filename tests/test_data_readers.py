"""Every reader round-trips fixture files written in the real formats, and the common API behaves."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from skimage.draw import disk
from skimage.segmentation import relabel_sequential

from monai_ext.data import (
    FORMATS,
    A431Reader,
    CVPPPReader,
    EMReader,
    FolderReader,
    LiveCellReader,
    MoNuSegReader,
    PngInstanceReader,
    detect_format,
    get_reader,
    split_datalist,
)
from monai_ext.data import writers as W
from monai_ext.errors import DataError

SHAPE = (48, 64)


def make_label(shape=SHAPE, n=5, seed=0, radius=5):
    """Random disks (ids 1..n) at least 3 pixels apart."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    placed = []
    while len(placed) < n:
        c = rng.integers(radius + 1, np.array(shape) - radius - 1)
        if all(np.hypot(*(c - p)) > 2 * radius + 3 for p in placed):
            placed.append(c)
    for i, c in enumerate(placed, start=1):
        rr, cc = disk(tuple(c), radius, shape=shape)
        lab[rr, cc] = i
    return lab


def rgb(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


def assert_same_partition(a, b):
    """Same instances up to renumbering (connected-component readers renumber)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    assert ((a > 0) == (b > 0)).all()
    pairs = np.unique(np.stack([a, b])[:, a > 0], axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def assert_iou_match(label, gt, min_iou=0.9):
    gt = relabel_sequential(gt)[0]
    ids = np.unique(label[label > 0])
    assert len(ids) == gt.max()
    for k in range(1, gt.max() + 1):
        a, b = label == k, gt == k
        assert (a & b).sum() / (a | b).sum() >= min_iou, f"instance {k}"


def check_contract(sample, channels, spatial):
    img = sample["image"]
    assert img.dtype == np.float32 and img.shape == (channels, *spatial)
    assert 0.0 <= img.min() and img.max() <= 1.0
    if "label" in sample:
        assert sample["label"].dtype == np.int32 and sample["label"].shape == (1, *spatial)
    if "points" in sample:
        assert sample["points"].dtype == np.float32 and sample["points"].shape[1] == len(spatial)
    meta = sample["meta"]
    assert {"id", "dataset", "image_path"} <= set(meta)


# ------------------------------------------------------------------------------------------------------ MoNuSeg
def test_monuseg_roundtrip_both_layouts(tmp_path):
    root = tmp_path / "monuseg"
    gts = {}
    for k, (split, layout) in enumerate([("MoNuSeg 2018 Training Data", "official"), ("MoNuSegTestData", "flat")]):
        gt = make_label(n=6, seed=k) * 3  # non-contiguous ids
        gts[split] = gt
        W.write_monuseg(root / split, f"TCGA-{k}", rgb(seed=k), gt, layout=layout)
    assert detect_format(root) == "monuseg"
    reader = get_reader("monuseg", root)
    assert isinstance(reader, MoNuSegReader) and reader.splits() == ["test", "train"]
    rec = reader.datalist("train")[0]
    assert rec["id"] == "TCGA-0" and rec["label"].endswith(".xml") and "Tissue Images" in rec["image"]
    sample = reader.load(rec)
    check_contract(sample, 3, SHAPE)
    assert_iou_match(sample["label"][0], gts["MoNuSeg 2018 Training Data"])
    np.testing.assert_allclose(sample["image"], np.moveaxis(rgb(seed=0), -1, 0) / 255.0, atol=1e-6)
    assert sample["meta"]["n_polygons"] == 6
    assert_iou_match(reader.load(reader.datalist("test")[0])["label"][0], gts["MoNuSegTestData"])


def test_monuseg_overlap_smaller_polygon_wins(tmp_path):
    xml = """<Annotations><Annotation Id="1"><Regions>
    <Region Id="1"><Vertices><Vertex X="2" Y="2"/><Vertex X="30" Y="2"/><Vertex X="30" Y="30"/><Vertex X="2" Y="30"/>
    </Vertices></Region>
    <Region Id="2"><Vertices><Vertex X="10" Y="10"/><Vertex X="15" Y="10"/><Vertex X="15" Y="15"/></Vertices></Region>
    </Regions></Annotation></Annotations>"""
    W.write_image(tmp_path / "a.tif", rgb((40, 40)))
    (tmp_path / "a.xml").write_text(xml)
    label = MoNuSegReader(tmp_path)[0]["label"][0]
    assert label[12, 14] == 2 and label[20, 5] == 1  # the small triangle stays on top of the big square
    # order does not matter: swap regions
    (tmp_path / "a.xml").write_text(xml.replace('Id="1"><Vertices>', 'Id="X"><Vertices>'))
    assert (MoNuSegReader(tmp_path)[0]["label"][0] == label).all()


# ----------------------------------------------------------------------------------------------- COIN / TNBC PNG
def test_coin_png_roundtrip_ids_above_255_and_ignore(tmp_path):
    gt = make_label(n=4) * 200  # ids 200..800
    gt[0:3, 0:3] = -1
    W.write_png_instance(tmp_path, "img1", rgb(), gt, split="train")
    W.write_png_instance(tmp_path, "img2", rgb(seed=1), make_label(seed=1), split="test")
    assert detect_format(tmp_path) == "png_instance"
    reader = PngInstanceReader(tmp_path)
    assert [r["id"] for r in reader.datalist()] == ["test_img2", "train_img1"]
    sample = reader.load(reader.datalist("train")[0])
    check_contract(sample, 3, SHAPE)
    np.testing.assert_array_equal(sample["label"][0], gt)


@pytest.mark.parametrize("encoding", ["gray", "binary"])
def test_png_instance_gray_and_binary_masks(tmp_path, encoding):
    gt = make_label(n=4) * 100  # gray: 16-bit ids
    W.write_png_instance(tmp_path, "a", rgb(), gt, encoding=encoding)
    label = PngInstanceReader(tmp_path)[0]["label"][0]
    if encoding == "gray":
        np.testing.assert_array_equal(label, gt)
    else:
        assert_same_partition(label, gt)


def test_tnbc_binary_masks_become_components_and_test_ids(tmp_path):
    gts = {}
    for k, stem in enumerate(["01_1", "01_2", "02_1"]):
        gts[stem] = make_label(n=3 + k, seed=k)
        W.write_tnbc(tmp_path, stem, rgb(seed=k), gts[stem])
    reader = get_reader("tnbc", tmp_path, test_ids=["02_1"])
    assert [r["id"] for r in reader.datalist("test")] == ["02_1"]
    assert len(reader.datalist("train")) == 2
    for rec in reader.datalist():
        assert_same_partition(reader.load(rec)["label"][0], gts[rec["id"]])
    # touching nuclei merge in binary ground truth (documented)
    touching = np.zeros(SHAPE, np.int32)
    touching[5:15, 5:15], touching[5:15, 15:25], touching[30:40, 30:40] = 1, 2, 3
    W.write_tnbc(tmp_path / "touch", "05_1", rgb(), touching)
    assert np.unique(PngInstanceReader(tmp_path / "touch")[0]["label"]).tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------------------ LIVECell
def test_livecell_roundtrip_dict_and_list_annotations(tmp_path):
    gts = [make_label(n=6, seed=s, radius=6) for s in range(2)]
    items = [{"image": rgb(seed=s)[..., 0], "label": g, "cell_line": line} for s, (g, line) in
             enumerate(zip(gts, ["SHSY5Y", "MCF7"]))]
    W.write_livecell(tmp_path, items, split="train")
    test_item = dict(items[0], file_name="SHSY5Y_Phase_C7_1_00d00h00m_4.tif")
    W.write_livecell(tmp_path, [test_item], split="test", nested=False, annotations_as_dict=False)
    assert detect_format(tmp_path) == "livecell"
    reader = LiveCellReader(tmp_path)
    assert reader.splits() == ["test", "train"]
    recs = reader.datalist("train")
    assert [r["cell_line"] for r in recs] == ["MCF7", "SHSY5Y"]
    for rec in recs + reader.datalist("test"):
        sample = reader.load(rec)
        check_contract(sample, 1, SHAPE)
        gt = gts[0] if rec["cell_line"] == "SHSY5Y" else gts[1]
        assert_iou_match(sample["label"][0], gt)
        assert sample["meta"]["cell_line"] == rec["cell_line"]
        # points are the instance centroids, (y, x), in id order
        ys, xs = np.nonzero(sample["label"][0] == 1)
        np.testing.assert_allclose(sample["points"][0], [ys.mean(), xs.mean()], atol=1e-4)
        assert len(sample["points"]) == 6


def test_livecell_image_without_annotations_is_skipped_with_warning(tmp_path, caplog):
    W.write_livecell(tmp_path, [{"image": rgb()[..., 0], "label": make_label()},
                                {"image": rgb()[..., 0], "label": np.zeros(SHAPE, np.int32)}])
    with caplog.at_level(logging.WARNING):
        recs = LiveCellReader(tmp_path).datalist()
    assert len(recs) == 1 and "no annotations" in caplog.text and "livecell_coco_train.json" in caplog.text
    kept = LiveCellReader(tmp_path, allow_empty=True)
    assert len(kept.datalist()) == 2
    assert (kept.load(kept.datalist()[1])["label"] == 0).all()


# ---------------------------------------------------------------------------------------------------------- A431
def test_a431_train_points_and_test_masks(tmp_path):
    locs = [[10.0, 12.5], [30.0, 40.0]]
    train = [{"image": rgb()[..., 0], "locations": locs},
             {"image": rgb(seed=1)[..., :2], "locations": [[5, 5]], "mask": make_label(seed=1)}]
    gt = make_label(seed=2) * 1000
    W.write_a431(tmp_path, train, [(rgb(seed=2)[..., 0], gt)])
    assert detect_format(tmp_path) == "a431"
    reader = A431Reader(tmp_path)
    assert [r["id"] for r in reader.datalist()] == ["test_0000", "train_0000", "train_0001"]
    s0 = reader.load(reader.datalist("train")[0])
    check_contract(s0, 1, SHAPE)
    np.testing.assert_array_equal(s0["points"], np.array(locs, np.float32))
    assert "label" not in s0
    s1 = reader.load(reader.datalist("train")[1])
    check_contract(s1, 2, SHAPE)  # channel count kept
    np.testing.assert_array_equal(s1["label"][0], make_label(seed=1))
    st = reader.load(reader.datalist("test")[0])
    np.testing.assert_array_equal(st["label"][0], gt)
    assert "points" not in st


# ------------------------------------------------------------------------------------------------------------ EM
def em_volume(depth=4, shape=(24, 32), seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 256, (depth, *shape), dtype=np.uint8)
    lab = np.zeros((depth, *shape), np.uint16)
    lab[:, 2:8, 3:9] = 300
    lab[1:3, 12:20, 15:25] = 7
    return vol, lab


def test_em_lucchi_tif_binary_masks_to_instances(tmp_path):
    vol, lab = em_volume()
    W.write_em_volume(tmp_path / "training.tif", vol)
    W.write_em_volume(tmp_path / "training_groundtruth.tif", ((lab > 0) * 255).astype(np.uint8))
    W.write_em_volume(tmp_path / "testing.tif", vol[:2])
    W.write_em_volume(tmp_path / "testing_groundtruth.tif", ((lab[:2] > 0) * 255).astype(np.uint8))
    assert detect_format(tmp_path) == "em"
    reader = EMReader(tmp_path)
    assert len(reader.datalist("train")) == 4 and len(reader.datalist("test")) == 2
    rec = reader.datalist("train")[1]
    assert rec["id"] == "training_z0001" and rec["z"] == 1 and rec["domain"] == "source"
    s = reader.load(rec)
    check_contract(s, 1, (24, 32))
    np.testing.assert_allclose(s["image"][0], vol[1] / 255.0, atol=1e-6)
    assert_same_partition(s["label"][0], lab[1])
    s3 = EMReader(tmp_path, mode="3d").load(EMReader(tmp_path, mode="3d").datalist("train")[0])
    check_contract(s3, 1, (4, 24, 32))
    assert_same_partition(s3["label"][0], lab)


def test_em_h5_instance_volume_patches_and_points(tmp_path):
    vol, lab = em_volume(depth=5, seed=3)
    W.write_em_volume(tmp_path / "train" / "mito.h5", vol, key="raw")
    W.write_em_volume(tmp_path / "train" / "mito.h5", lab, key="label")
    W.write_em_volume(tmp_path / "target" / "vol.h5", vol, key="main")
    pts = np.array([[0, 5, 6], [2, 15, 20], [4, 23, 31]], np.float32)
    W.write_points(tmp_path / "target" / "vol_points.json", pts)
    reader = EMReader(tmp_path, mode="3d", patch_size=(3, 16, 16))
    recs = reader.datalist()
    src = [r for r in recs if r["name"] == "mito"]
    tgt = [r for r in recs if r["name"] == "vol"]
    assert len(src) == len(tgt) == 2 * 2 * 2 and src[0]["split"] == "train"
    assert src[0]["label_key"] == "label" and tgt[0]["domain"] == "target" and tgt[0]["label"] is None
    covered = np.zeros(vol.shape, bool)
    for r in src:
        s = reader.load(r)
        z0, z1, y0, y1, x0, x1 = r["roi"]
        covered[z0:z1, y0:y1, x0:x1] = True
        np.testing.assert_array_equal(s["label"][0], lab[z0:z1, y0:y1, x0:x1])
        check_contract(s, 1, (3, 16, 16))
    assert covered.all()
    got = np.concatenate([reader.load(r)["points"] + np.array(r["roi"][::2], np.float32) for r in tgt])
    assert {tuple(p) for p in got.tolist()} == {tuple(p) for p in pts.tolist()}
    r2 = EMReader(tmp_path / "target")
    per_slice = [len(r2.load(r)["points"]) for r in r2.datalist()]
    assert per_slice == [1, 0, 1, 0, 1]


def test_em_slice_folders_vnc_and_mitoem_explicit(tmp_path):
    vol, lab = em_volume(depth=3, seed=4)
    W.write_em_slices(tmp_path / "vnc" / "stack1" / "raw", vol, ext=".tif", digits=2)
    W.write_em_slices(tmp_path / "vnc" / "stack1" / "mitochondria", ((lab > 0) * 255).astype(np.uint8), digits=2)
    W.write_em_slices(tmp_path / "vnc" / "stack1" / "membranes", vol, digits=2)  # ignored
    assert detect_format(tmp_path / "vnc") == "em"
    reader = EMReader(tmp_path / "vnc")
    recs = reader.datalist()
    assert [r["id"] for r in recs] == ["stack1_z0000", "stack1_z0001", "stack1_z0002"]
    assert_same_partition(reader.load(recs[2])["label"][0], lab[2])
    # MitoEM: im/ slices + an h5 label covering the first slices only
    big = np.concatenate([vol, vol])
    W.write_em_slices(tmp_path / "mitoem" / "im", big, prefix="im")
    W.write_em_volume(tmp_path / "mitoem" / "mito_train.h5", lab.astype(np.uint32), key="main")
    W.write_points(tmp_path / "mitoem" / "pts.csv", [[4, 3, 3], [0, 1, 1]])  # z in the image file's slices
    specs = [{"image": "im", "label": "mito_train.h5", "image_z": [0, 3], "split": "train", "name": "R_train"},
             {"image": "im", "image_z": [3, 6], "points": "pts.csv", "split": "val", "name": "R_val"}]
    assert detect_format(tmp_path / "mitoem") == "em"
    reader = get_reader("mitoem", tmp_path / "mitoem", volumes=specs)
    assert len(reader.datalist("train")) == 3 and len(reader.datalist("val")) == 3
    np.testing.assert_array_equal(reader.load(reader.datalist("train")[1])["label"][0], lab[1])
    val = reader.datalist("val")
    assert [len(reader.load(r)["points"]) for r in val] == [0, 1, 0]
    np.testing.assert_allclose(reader.load(val[1])["image"][0], vol[1] / 255.0, atol=1e-6)


def test_em_png_point_folder_per_slice(tmp_path):
    vol, _ = em_volume(depth=2)
    W.write_em_volume(tmp_path / "target.tif", vol)
    W.write_points(tmp_path / "target_points" / "0000.png", [[3, 4], [10, 11]], shape=(24, 32))
    W.write_points(tmp_path / "target_points" / "0001.png", [[7, 8]], shape=(24, 32))
    reader = EMReader(tmp_path)
    pts = [reader.load(r)["points"].tolist() for r in reader.datalist()]
    assert pts == [[[3, 4], [10, 11]], [[7, 8]]]


# --------------------------------------------------------------------------------------------------------- CVPPP
def test_cvppp_png_and_h5_roundtrip_exact(tmp_path):
    gt = make_label(n=7, seed=5)
    root = tmp_path / "CVPPP2017_LSC_training"
    W.write_cvppp(root / "training" / "A1", "plant001", rgb(), gt)
    W.write_cvppp(root / "training" / "A2", "plant001", rgb(), gt)  # other subset: ignored
    W.write_cvppp(root / "testing" / "A1", "plant002", rgb(), None)
    assert detect_format(tmp_path) == "cvppp"
    reader = CVPPPReader(tmp_path, load_fg=True)
    assert [r["id"] for r in reader.datalist()] == ["test_A1_plant002", "train_A1_plant001"]
    s = reader.load(reader.datalist("train")[0])
    check_contract(s, 3, SHAPE)
    np.testing.assert_array_equal(s["label"][0], gt)
    np.testing.assert_array_equal(s["fg"][0], gt > 0)
    assert "label" not in reader.load(reader.datalist("test")[0])
    assert len(CVPPPReader(tmp_path, subset=None).datalist()) == 3
    h5root = tmp_path / "h5"
    W.write_cvppp_h5(h5root, [{"name": "plant001", "rgb": rgb(), "label": gt}])
    W.write_cvppp_h5(h5root, [{"name": "plant009", "rgb": rgb()}], split="testing")
    reader = CVPPPReader(h5root)
    assert [r["split"] for r in reader.datalist()] == ["test", "train"]
    s = reader.load(reader.datalist("train")[0])
    np.testing.assert_array_equal(s["label"][0], gt)
    np.testing.assert_allclose(s["image"], np.moveaxis(rgb(), -1, 0) / 255.0, atol=1e-6)


def test_cvppp_rgb_label_with_foreign_colours(tmp_path):
    from PIL import Image

    gt = make_label(n=3, seed=6)
    W.write_cvppp(tmp_path / "A1", "plant003", rgb(), gt)
    colours = np.array([[0, 0, 0], [10, 200, 30], [250, 1, 2], [5, 5, 90]], np.uint8)
    Image.fromarray(colours[gt]).save(tmp_path / "A1" / "plant003_label.png")
    assert_same_partition(CVPPPReader(tmp_path)[0]["label"][0], gt)


# -------------------------------------------------------------------------------------------------------- folder
def test_folder_roundtrip_with_splits_suffixes_and_points(tmp_path):
    gt = make_label(seed=7) * 5000  # needs 32-bit tif
    W.write_folder_pair(tmp_path, "a", rgb(), gt, split="train")
    W.write_folder_pair(tmp_path, "b", rgb()[..., 0], make_label(seed=8), split="train", image_ext=".png",
                        label_ext=".png")
    W.write_image(tmp_path / "val" / "images" / "c.png", rgb())
    W.write_label(tmp_path / "val" / "masks" / "c_mask.png", make_label(seed=9))
    W.write_points(tmp_path / "val" / "points" / "c.csv", [[3, 4]])
    assert detect_format(tmp_path) == "folder"
    reader = FolderReader(tmp_path)
    assert [r["id"] for r in reader.datalist()] == ["train_a", "train_b", "val_c"]
    np.testing.assert_array_equal(reader.load(reader.datalist()[0])["label"][0], gt)
    check_contract(reader.load(reader.datalist()[1]), 1, SHAPE)
    sc = reader.load(reader.datalist("val")[0])
    np.testing.assert_array_equal(sc["points"], [[3, 4]])
    np.testing.assert_array_equal(sc["label"][0], make_label(seed=9))
    W.write_image(tmp_path / "train" / "images" / "unlabelled.tif", rgb())
    assert len(FolderReader(tmp_path, require_labels=False).datalist("train")) == 3


# ----------------------------------------------------------------------------------------------- common API
def test_split_datalist_is_seeded_and_disjoint():
    records = [{"id": str(i)} for i in range(20)]
    tr, va = split_datalist(records, 0.25, seed=1)
    assert len(va) == 5 and len(tr) == 15
    assert {r["id"] for r in tr}.isdisjoint({r["id"] for r in va})
    assert split_datalist(records, 0.25, seed=1) == (tr, va)
    assert split_datalist(records, 0.25, seed=2)[1] != va
    assert len(split_datalist(records[:3], 0.01, seed=0)[1]) == 1
    with pytest.raises(ValueError):
        split_datalist(records, 1.0)


def test_reader_len_getitem_and_load_record_transform(tmp_path):
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose

    from monai_ext.data import LoadRecordd

    for k in range(3):
        W.write_folder_pair(tmp_path, f"s{k}", rgb(seed=k), make_label(seed=k), split="train" if k else "test")
    reader = get_reader(None, tmp_path, split="train")
    assert len(reader) == 2 and reader[1]["meta"]["id"] == "train_s2"
    ds = Dataset(data=reader.datalist("train"), transform=Compose([LoadRecordd(reader)]))
    assert ds[0]["image"].shape == (3, *SHAPE)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert tuple(batch["image"].shape) == (2, 3, *SHAPE) and list(batch["meta"]["id"]) == ["train_s1", "train_s2"]
    # without a reader: rebuilt from the record's format and root
    assert LoadRecordd()(reader.datalist("test")[0])["meta"]["id"] == "test_s0"
    assert json.loads(json.dumps(reader.datalist())) == reader.datalist()  # records are plain JSON


def test_get_reader_formats_and_errors(tmp_path):
    assert set(FORMATS) == {"monuseg", "png_instance", "livecell", "a431", "em", "cvppp", "folder"}
    with pytest.raises(DataError, match="unknown dataset format"):
        get_reader("nope", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        get_reader("folder", tmp_path / "missing")
    with pytest.raises(DataError, match="empty"):
        detect_format(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="cannot tell"):
        detect_format(tmp_path)
    W.write_folder_pair(tmp_path, "a", rgb(), make_label())
    W.write_cvppp(tmp_path / "A1", "plant001", rgb(), make_label())
    with pytest.raises(DataError, match="ambiguous.*cvppp.*folder|ambiguous.*folder.*cvppp"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match="no samples for split 'val'"):
        FolderReader(tmp_path).datalist("val")
