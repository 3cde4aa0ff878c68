"""Numerically equivalent fast layers: a kernel == stride transposed convolution as 1x1 conv + pixel shuffle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_ext.networks.blocks import PixelShuffleDeconv2d, fast_deconvs
from monai_ext.networks.coin import COINUNet


@pytest.mark.parametrize("scale,bias", [(2, True), (3, False)])
def test_pixel_shuffle_deconv_equals_transposed_conv(scale: int, bias: bool) -> None:
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(6, 5, scale, scale, bias=bias)
    fast = PixelShuffleDeconv2d(deconv)
    x = torch.randn(2, 6, 7, 9, requires_grad=True)
    ref = deconv(x)
    out = fast(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # same parameters, same gradients
    assert fast.weight is deconv.weight and (fast.bias is deconv.bias)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, deconv.weight], g)
    out_grads = torch.autograd.grad(out, [x, fast.weight], g)
    for a, b in zip(out_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_only_non_overlapping_deconvs_are_replaced() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 4, 2, 2), nn.ConvTranspose2d(4, 4, 3, 2, padding=1),
                          nn.Sequential(nn.ConvTranspose2d(4, 2, 2, 2)))
    keys = list(model.state_dict())
    fast_deconvs(model)
    assert isinstance(model[0], PixelShuffleDeconv2d) and isinstance(model[2][0], PixelShuffleDeconv2d)
    assert isinstance(model[1], nn.ConvTranspose2d)  # overlapping kernel: kept
    assert list(model.state_dict()) == keys  # checkpoints are unchanged
    with pytest.raises(ValueError):
        PixelShuffleDeconv2d(nn.ConvTranspose2d(4, 4, 3, 2, padding=1))


def test_coin_unet_uses_it_with_unchanged_outputs_and_torchscript() -> None:
    make = lambda: COINUNet(features=(4, 4, 8, 8, 16, 4))  # noqa: E731
    torch.manual_seed(0)
    net = make().eval()
    assert any(isinstance(m, PixelShuffleDeconv2d) for m in net.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    # the same network built with MONAI's plain transposed convolutions gives the same output from the same weights
    torch.manual_seed(0)
    ref = make().eval()
    for parent in list(ref.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PixelShuffleDeconv2d):
                plain = nn.ConvTranspose2d(child.in_channels, child.out_channels, child.scale, child.scale)
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
    ref.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.jit.script(net)(x), net(x), atol=1e-5, rtol=1e-4)
