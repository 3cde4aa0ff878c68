"""COIN step 2 refiners: the offline seeded refiner and SAM loaded from a checkpoint (a tiny random SAM here)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from monai_ext.data.synthetic import synth_he_tile
from monai_ext.errors import DataError
from monai_ext.pseudo.refiners import (
    SAM_BUILDERS,
    ClassicalRefiner,
    SAMRefiner,
    batched_otsu,
    get_refiner,
    mosaic,
    register_sam_builder,
    unmosaic,
)
from monai_ext.pseudo.scoring import consistency_scores


@pytest.fixture(scope="module")
def tile() -> dict:
    return synth_he_tile(3, shape=(128, 128), stroma_h=0.0, pale_fraction=0.0, clump=0.0)


def test_mosaic_roundtrip_and_batched_otsu() -> None:
    w = np.arange(5 * 6 * 6).reshape(5, 6, 6)
    m, cols = mosaic(w, gap=1, fill=-1)
    assert m.shape == (2 * 7, 3 * 7) and (m[6, :] == -1).all()
    assert np.array_equal(unmosaic(m, 5, 6, cols, 1), w)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(0, 0.1, (3, 200)), rng.normal(1, 0.1, (3, 200))], 1)
    from skimage.filters import threshold_otsu

    t = batched_otsu(rows)
    assert np.allclose(t, [threshold_otsu(r) for r in rows], atol=0.05)


def test_classical_refiner_agrees_with_correct_instances(tile: dict) -> None:
    gt = tile["label"][0]
    ref = ClassicalRefiner()
    out = ref(tile["image"], gt)
    assert out.masks.shape[0] == len(np.unique(gt)) - 1 and out.masks.dtype == bool
    s = consistency_scores(gt, out)
    assert np.median(s) > 0.6, "correct, isolated nuclei must get high consistency"
    # a merged prediction (two nuclei as one instance) scores lower than the nuclei it merges
    ids = np.unique(gt)[1:]
    cy = np.array([np.argwhere(gt == i).mean(0) for i in ids])
    d = np.linalg.norm(cy[:, None] - cy[None], axis=-1) + np.eye(len(ids)) * 1e9
    a, b = np.unravel_index(d.argmin(), d.shape)
    merged = gt.copy()
    merged[merged == ids[b]] = ids[a]
    merged_score = consistency_scores(merged, ref(tile["image"], merged))
    k = list(np.unique(merged)[1:]).index(ids[a])
    assert merged_score[k] < max(s[a], s[b])


def test_classical_refiner_modes_and_errors(tile: dict) -> None:
    gt = tile["label"][0]
    for kw in ({"mode": "hematoxylin"}, {"boundary": "gradient"}, {"point": "inside", "window": 40}):
        out = ClassicalRefiner(**kw)(tile["image"], gt)
        assert out.window == kw.get("window", out.window) and np.isfinite(consistency_scores(gt, out)).all()
    empty = ClassicalRefiner()(tile["image"], np.zeros_like(gt))
    assert len(empty.ids) == 0
    with pytest.raises(DataError):
        ClassicalRefiner()(tile["image"], gt[:64])
    with pytest.raises(ValueError):
        ClassicalRefiner(mode="magic")


def _tiny_sam() -> torch.nn.Module:
    """A SAM built from segment_anything's own blocks, tiny and randomly initialised."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    dim, img = 32, 128
    return Sam(
        image_encoder=ImageEncoderViT(img_size=img, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=dim,
                                      window_size=4, global_attn_indexes=(0,), norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      use_rel_pos=True),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img // 16, img // 16),
                                     input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def _build_tiny(checkpoint: str) -> torch.nn.Module:
    sam = _tiny_sam()
    sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam


@pytest.fixture()
def tiny_sam_checkpoint(tmp_path):
    sam = _tiny_sam()
    with torch.no_grad():
        for p in sam.parameters():  # distinguishable from a fresh init
            p.add_(0.01)
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    register_sam_builder("vit_tiny_test", _build_tiny)
    yield path, sam
    SAM_BUILDERS.pop("vit_tiny_test", None)


def test_sam_refiner_real_loading_path(tiny_sam_checkpoint, tile: dict) -> None:
    path, sam = tiny_sam_checkpoint
    gt = tile["label"][0]
    ref = SAMRefiner(path, "vit_tiny_test", batch_size=3, device="cpu")
    for (k, v), (_, w) in zip(sam.state_dict().items(), ref.model.state_dict().items()):
        assert torch.equal(v, w), k
    out = ref(tile["image"], gt)
    n = len(np.unique(gt)) - 1
    assert out.masks.shape[0] == n and out.extra_area.shape == (n,) and (out.extra_area >= 0).all()
    s = consistency_scores(gt, out)
    assert ((s >= 0) & (s <= 1)).all()
    # box prompts and tiling of images larger than max_side go through the same path
    boxed = SAMRefiner(path, "vit_tiny_test", use_box=True, max_side=96, device="cpu")(tile["image"], gt)
    assert boxed.masks.shape == out.masks.shape
    assert isinstance(get_refiner("sam", checkpoint=path, model_type="vit_tiny_test", device="cpu"), SAMRefiner)


def test_sam_refiner_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        SAMRefiner(tmp_path / "missing.pth", "vit_b")
    (tmp_path / "x.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown SAM model type"):
        SAMRefiner(tmp_path / "x.pth", "vit_giant")


def test_snap_to_mask_moves_points_to_the_nearest_mask_pixel_within_the_radius() -> None:
    from monai_ext.pseudo.refiners import _snap_to_mask

    m = np.zeros((20, 20), bool)
    m[5, 8] = True  # 3 px right of (5, 5)
    m[15:17, 15:17] = True
    y = np.array([5, 16, 0, 5])
    x = np.array([5, 15, 0, 12])
    found, sy, sx = _snap_to_mask(m, y, x, 3.0)
    assert found.tolist() == [True, True, False, False]  # on the mask stays; (0,0) and (5,12) are > 3 px away
    assert (sy.tolist(), sx.tolist()) == ([5, 16, 0, 5], [8, 15, 0, 12])
    # the distance-transform reference: every found point is at the exact nearest distance
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~m)
    assert np.allclose(np.hypot(sy - y, sx - x)[found], dist[y, x][found])


def test_paint_disks_is_the_grey_dilation_of_the_points() -> None:
    """The prompt disks written at the points equal a grey dilation of the point image, borders and overlaps
    (largest id wins) included."""
    from scipy import ndimage

    from monai_ext.postprocess.watershed import footprint
    from monai_ext.pseudo.refiners import _paint_disks

    rng = np.random.default_rng(0)
    y, x = rng.integers(0, 30, 12), rng.integers(0, 40, 12)
    y[:2], x[:2] = (0, 29), (39, 0)  # corners: disks cut by the border
    ids = rng.permutation(12).astype(np.int32) + 1
    img = np.zeros((30, 40), np.int32)
    np.maximum.at(img, (y, x), ids)
    for r in (1, 2, 4):
        np.testing.assert_array_equal(_paint_disks(img.shape, y, x, ids, r),
                                      ndimage.grey_dilation(img, footprint=footprint(r, 2)))


def test_prompt_disk_stops_correct_nuclei_from_scoring_zero() -> None:
    """Scored against ground-truth instances of default-difficulty tiles (textured, pale, clumped nuclei), a
    one-pixel prompt is often walled in by the surrounding markers (a few-pixel basin, score ~0); the prompt disk
    (``prompt_radius``) recovers many of them and raises the mean agreement."""
    tiles = [synth_he_tile(s, shape=(256, 256)) for s in (10_000, 10_001)]

    def stats(radius: int) -> tuple[int, float]:
        scores = np.concatenate([consistency_scores(t["label"][0], ClassicalRefiner(prompt_radius=radius)(
            t["image"], t["label"][0])) for t in tiles])
        return int((scores < 0.1).sum()), float(scores.mean())

    (low0, mean0), (low2, mean2) = stats(0), stats(2)
    assert ClassicalRefiner().prompt_radius == 2
    assert low2 < 0.7 * low0, (low0, low2)
    assert mean2 > mean0 + 0.05, (mean0, mean2)
