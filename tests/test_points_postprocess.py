"""Point post-processing: exact distance NMS, crop gather/scatter, painting (higher score wins), tiled inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_ext.errors import DataError
from monai_ext.postprocess.points import (
    InstancesFromPredd,
    TiledInstanceInferer,
    crop_flat_index,
    distance_nms,
    gather_crops,
    paint_instances,
    paste_crops,
    remove_small_instances,
)


def greedy_nms(points: np.ndarray, scores: np.ndarray, radius: float) -> list[int]:
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(np.sum((points[i] - points[j]) ** 2) >= radius * radius for j in keep):
            keep.append(int(i))
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_distance_nms_equals_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    if seed % 2:  # clustered detections, as a detector produces around each cell
        centres = rng.uniform(0, 200, (max(1, n // 10), 2))
        pts = (centres[:, None] + rng.normal(0, 2.0, (len(centres), 10, 2))).reshape(-1, 2)
    else:
        pts = rng.uniform(-30, 130, (n, 2))
    scores = rng.random(len(pts))
    got = distance_nms(torch.tensor(pts, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), 8.0)
    assert got.tolist() == greedy_nms(pts.astype(np.float32), scores.astype(np.float32), 8.0)


def test_distance_nms_options() -> None:
    pts = torch.tensor([[0.0, 0.0], [3.0, 0.0], [20.0, 0.0], [40.0, 0.0]])
    sc = torch.tensor([0.9, 0.95, 0.1, 0.5])
    assert distance_nms(pts, sc, 8.0).tolist() == [1, 3, 2]
    assert distance_nms(pts, sc, 8.0, min_score=0.3).tolist() == [1, 3]
    assert distance_nms(pts, sc, 8.0, max_output=1).tolist() == [1]
    assert distance_nms(pts[:0], sc[:0], 8.0).numel() == 0
    assert distance_nms(pts, sc, 2.0).tolist() == [1, 0, 3, 2]  # 3 px apart: both kept at radius 2


def test_crop_index_paste_gather() -> None:
    origin = torch.tensor([[-1, -1], [2, 3]])
    batch = torch.tensor([0, 1])
    flat, valid = crop_flat_index(origin, batch, 3, 4, 5)
    assert valid[0].sum() == 4 and valid[0, 0].sum() == 0 and valid[0, :, 0].sum() == 0
    assert valid[1].sum() == 2 * 2  # rows 2..3 and cols 3..4 inside a 4 x 5 image
    vals = torch.ones(2, 3, 3)
    img = paste_crops(vals, flat, valid, 2 * 4 * 5).view(2, 4, 5)
    assert img[0].sum() == 4 and img[0, :2, :2].sum() == 4
    assert img[1].sum() == 4 and img[1, 2:, 3:].sum() == 4
    back = gather_crops(img.reshape(-1), flat, valid, fill=-1.0)
    assert back[0, 0, 0] == -1 and back[0, 1, 1] == 1
    mx = paste_crops(torch.full((2, 3, 3), 2.0), flat, valid, 40, reduce="amax", fill=-5.0).view(2, 4, 5)
    assert mx[0, 0, 0] == 2 and mx[0, 3, 3] == -5


def test_paint_higher_score_wins_and_ids_by_score() -> None:
    probs = torch.zeros(3, 4, 4)
    probs[0, :, :] = 0.9  # cell 0 covers rows 0..3 of its window
    probs[1, :, :] = 0.8
    probs[2, :2, :2] = 0.7
    origin = torch.tensor([[0, 0], [2, 2], [0, 0]])
    batch = torch.tensor([0, 0, 1])
    scores = torch.tensor([0.6, 0.9, 0.7])
    out = paint_instances(probs, origin, batch, scores, 2, 6, 6, 0.5)
    lab, sc = out[:, 0], out[:, 1]
    # image 0: cell 1 (score 0.9) gets id 1 and wins the overlap [2:4, 2:4]; cell 0 gets id 2
    assert lab[0, 3, 3] == 1 and lab[0, 0, 0] == 2 and lab[0, 5, 5] == 1
    assert sc[0, 3, 3] == pytest.approx(0.9) and sc[0, 0, 0] == pytest.approx(0.6)
    assert (lab[0] == 2).sum() == 16 - 4
    assert lab[1].max() == 1 and (lab[1] == 1).sum() == 4
    out = paint_instances(probs, origin, batch, scores, 2, 6, 6, 0.5, min_area=5)
    assert (out[1, 0] > 0).sum() == 0  # the 4-pixel cell is removed


def test_instances_from_pred_and_small_removal() -> None:
    pred = np.zeros((2, 8, 8), np.float32)
    pred[0, :3, :3], pred[1, :3, :3] = 1, 0.8
    pred[0, 5:, 5:], pred[1, 5:, 5:] = 2, 0.6
    pred[0, 4, 0], pred[1, 4, 0] = 3, 0.3
    d = InstancesFromPredd("pred", min_area=2)({"pred": torch.as_tensor(pred), "meta": {"cell_line": "BV2"}})
    assert d["pred"].shape == (1, 8, 8) and d["pred"].dtype == torch.int32
    assert d["scores"] == {1: pytest.approx(0.8), 2: pytest.approx(0.6)}
    assert d["group"] == "BV2"
    with pytest.raises(DataError):
        InstancesFromPredd("pred")({"pred": np.zeros((1, 4, 4))})
    lab = np.array([[1, 1, 0], [2, 0, 3], [3, 3, 3]])
    assert (remove_small_instances(lab, 2) == np.array([[1, 1, 0], [0, 0, 3], [3, 3, 3]])).all()


class _DiscNet(torch.nn.Module):
    """A stand-in network: connected components of ``image > 0.5`` as instances, score = mean intensity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        for b in range(x.shape[0]):
            lab, n = ndimage.label(x[b, 0].numpy() > 0.5)
            out[b, 0] = torch.as_tensor(lab, dtype=torch.float32)
            means = ndimage.mean(x[b, 0].numpy(), lab, np.arange(1, n + 1)) if n else []
            sc = np.concatenate([[0.0], np.asarray(means)])
            out[b, 1] = torch.as_tensor(sc[lab], dtype=torch.float32)
        return out


def test_tiled_inference_reassembles_cut_cells() -> None:
    rng = np.random.default_rng(0)
    h, w = 300, 410
    img = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[:h, :w]
    centres = []
    for _ in range(200):  # non-touching discs of radius <= 9, some across tile seams
        c = rng.uniform(0, [h, w])
        if all(np.hypot(*(c - o)) > 22 for o in centres):
            centres.append(c)
            img[np.hypot(yy - c[0], xx - c[1]) <= rng.uniform(5, 9)] = rng.uniform(0.6, 1.0)
    x = torch.as_tensor(img)[None, None]
    net = _DiscNet()
    whole = net(x)
    tiled = TiledInstanceInferer(roi_size=(128, 160), overlap=40)(x, net)
    assert tiled.shape == whole.shape
    a, b = whole[0, 0].numpy().astype(int), tiled[0, 0].numpy().astype(int)
    assert a.max() == b.max() == len(np.unique(b)) - 1  # same cell count, ids 1..n, nothing duplicated or lost
    assert ((a > 0) == (b > 0)).all()
    # every reference cell maps to exactly one tiled cell (same pixels)
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    assert pairs.shape[1] == a.max()
    # scores are kept
    assert torch.allclose(tiled[0, 1], whole[0, 1])
    # small images go through in one call
    small = TiledInstanceInferer(roi_size=512, overlap=40)(x, net)
    assert torch.equal(small, whole)
    with pytest.raises(ValueError):
        TiledInstanceInferer(roi_size=64, overlap=40)
