"""Multi-task network (shapes, projection, TorchScript) and instance post-processing (peaks, watershed, 3D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.errors import DataError
from monai_ext.networks.multitask import MultiTaskUNet, split_outputs
from monai_ext.postprocess.centers import (
    EMInstancesd,
    centre_watershed,
    connected_instances,
    instance_scores,
    link_slices,
    local_peaks,
)
from monai_ext.transforms.em import points_to_heatmap


@pytest.mark.parametrize("proj_level", [0, 2])
def test_network_shapes_and_projection(proj_level: int) -> None:
    net = MultiTaskUNet(channels=(4, 8, 16), proj_dim=5, proj_level=proj_level).eval()
    x = torch.rand(2, 1, 37, 50)  # not a multiple of 4: padded inside
    with torch.no_grad():
        y = net(x)
        z = net(x, True)
    assert y.shape == (2, 3, 37, 50) and z.shape == (2, 8, 37, 50)
    seg, det, proj = split_outputs(z)
    assert seg.shape[1] == 2 and (det >= 0).all() and proj.shape[1] == 5
    assert split_outputs(y)[2] is None
    torch.testing.assert_close(y, z[:, :3])


def test_network_torchscript_and_errors() -> None:
    net = MultiTaskUNet(channels=(4, 8)).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
    with pytest.raises(ValueError):
        MultiTaskUNet(channels=(4,))
    with pytest.raises(ValueError):
        MultiTaskUNet(norm="group")


def _two_touching() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:40, :60]
    gt = np.zeros((40, 60), np.int32)
    gt[np.hypot(yy - 20, xx - 20) < 9] = 1
    gt[np.hypot(yy - 20, xx - 36) < 9] = 2
    prob = (gt > 0).astype(np.float32) * 0.9 + 0.05
    heat = points_to_heatmap(np.array([[20, 20], [20, 36]], np.float32), gt.shape, sigma=3.0)
    return gt, prob, heat


def test_peaks_watershed_and_components() -> None:
    gt, prob, heat = _two_touching()
    pk = local_peaks(heat, 2, 0.3)
    assert sorted(map(tuple, pk.tolist())) == [(20, 20), (20, 36)]
    assert len(local_peaks(heat, 2, 0.3, mask=np.zeros_like(gt, bool))) == 0
    ws = centre_watershed(prob, heat, min_size=4)
    assert ws.max() == 2
    assert (ws[gt == 1] == ws[20, 20]).mean() > 0.95 and (ws[gt == 2] == ws[20, 36]).mean() > 0.95
    cc = connected_instances(prob, min_size=4)
    assert cc.max() == 1  # touching objects merge without centres
    # a component without any peak keeps one id
    ws2 = centre_watershed(prob, np.zeros_like(heat), min_size=4)
    assert ws2.max() == 1
    sc = instance_scores(ws, prob)
    assert set(sc) == {1, 2} and all(v == pytest.approx(0.95) for v in sc.values())
    with pytest.raises(DataError):
        centre_watershed(prob, heat[:10])


def test_link_slices() -> None:
    lab = np.zeros((3, 20, 20), np.int32)
    lab[0, 2:8, 2:8] = 5
    lab[1, 3:9, 3:9] = 1  # overlaps slice 0's object
    lab[1, 12:18, 12:18] = 2
    lab[2, 12:18, 12:17] = 9  # overlaps slice 1's second object
    lab[2, 2:4, 15:19] = 3  # new object
    out = link_slices(lab, min_iou=0.3)
    assert out.max() == 3
    assert out[0, 5, 5] == out[1, 5, 5] and out[1, 14, 14] == out[2, 14, 14] and out[2, 3, 16] not in (0, out[0, 5, 5])
    assert link_slices(np.zeros((2, 4, 4), np.int32)).max() == 0


def test_em_instances_transform_2d_and_3d() -> None:
    gt, prob, heat = _two_touching()
    pred = np.stack([1 - prob, prob, heat])
    d = EMInstancesd(min_size=4)({"pred": torch.as_tensor(pred)})
    assert isinstance(d["pred"], torch.Tensor) and d["pred"].shape == (1, 40, 60) and int(d["pred"].max()) == 2
    assert set(d["scores"]) == {1, 2}
    vol = np.stack([pred, pred], 1)  # (3, 2, H, W)
    d3 = EMInstancesd(min_size=4, method="cc", prob_key="prob")({"pred": vol})
    assert d3["pred"].shape == (1, 2, 40, 60) and int(d3["pred"].max()) == 1 and d3["prob"].shape == (1, 2, 40, 60)
    logits = np.stack([np.log(1 - prob), np.log(prob), heat])
    dl = EMInstancesd(min_size=4, softmax=True)({"pred": logits})
    assert int(dl["pred"].max()) == 2
    with pytest.raises(DataError):
        EMInstancesd()({"pred": pred[:2]})
