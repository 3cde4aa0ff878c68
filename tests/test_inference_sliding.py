"""Sliding windows clamped to the input: small inputs run whole and unpadded (instance-norm networks), larger ones
exactly as MONAI's SlidingWindowInferer."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from monai_ext.engines.coin import COINInferer
from monai_ext.inference import FittedSlidingWindowInferer
from monai_ext.networks.coin import COINUNet


def _in_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.InstanceNorm2d(4), nn.Conv2d(4, 2, 1)).eval()


def test_small_input_runs_whole_and_unpadded() -> None:
    net = _in_net()
    x = torch.rand(1, 1, 20, 28)
    with torch.no_grad():
        out = FittedSlidingWindowInferer(32, overlap=0.25)(x, net)
        torch.testing.assert_close(out, net(x))
        padded = SlidingWindowInferer(32, overlap=0.25)(x, net)  # MONAI pads to 32: the statistics change
    assert (padded - net(x)).abs().max() > 1e-3


def test_large_input_and_mixed_axes_match_monai() -> None:
    net = _in_net()
    x = torch.rand(2, 1, 40, 70)
    fitted = FittedSlidingWindowInferer((64, 24), overlap=0.25, sw_batch_size=3)
    with torch.no_grad():
        out = fitted(x, net)
        ref = SlidingWindowInferer((40, 24), overlap=0.25, sw_batch_size=3)(x, net)  # height clamped to 40
    torch.testing.assert_close(out, ref)
    assert fitted.window(x.shape) == (40, 24)
    with torch.no_grad():  # the clamped inferer is built once per window and reused
        fitted(x, net)
    assert len(fitted._inferers) == 1
    with pytest.raises(ValueError):
        FittedSlidingWindowInferer((64, 0))
    with pytest.raises(ValueError):
        FittedSlidingWindowInferer((64, 64, 64))


def test_coin_inferer_runs_a_small_tile_whole() -> None:
    torch.manual_seed(0)
    net = COINUNet(features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        out = COINInferer(roi_size=64, flip=False)(x, net)
        logits = net(x)
    whole = torch.cat([logits[:, :2].softmax(1), logits[:, 2:].softmax(1)], 1)
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-4)
