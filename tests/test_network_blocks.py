"""Numerically equivalent fast layers: a kernel == stride transposed convolution as 1x1 conv + pixel shuffle; CPU
inference instance norm as group norm and max-pool as strided maxima."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_ext.networks.blocks import (FastInstanceNorm2d, FastMaxPool2d, PixelShuffleDeconv2d, fast_deconvs,
                                       fast_inference_layers)
from monai_ext.networks.coin import COINUNet
from monai_ext.networks.embedding import EmbeddingUNet
from monai_ext.networks.multitask import MultiTaskUNet


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


@pytest.mark.parametrize("affine", [True, False])
def test_fast_instance_norm_equals_instance_norm_in_eval_and_train(affine: bool) -> None:
    torch.manual_seed(0)
    norm = nn.InstanceNorm2d(5, affine=affine, eps=1e-3)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
    fast = FastInstanceNorm2d(norm)
    x = torch.randn(3, 5, 11, 13) * 4 + 2
    for training in (False, True):
        norm.train(training)
        fast.train(training)
        torch.testing.assert_close(fast(x), norm(x), atol=1e-5, rtol=1e-5)
    assert list(fast.state_dict()) == list(norm.state_dict())
    norm.eval()
    fast.eval()
    torch.testing.assert_close(fast(x[0]), norm(x[0]), atol=1e-5, rtol=1e-5)  # unbatched (C, H, W)
    with pytest.raises(ValueError, match="3D or 4D"):
        fast(x[None])
    with pytest.raises(ValueError):  # running statistics: not the same computation at inference
        FastInstanceNorm2d(nn.InstanceNorm2d(5, track_running_stats=True))


@pytest.mark.parametrize("k,shape", [(2, (2, 3, 10, 14)), (2, (1, 2, 9, 7)), (3, (1, 2, 11, 12)), (2, (4, 7, 9))])
def test_fast_max_pool_equals_max_pool(k: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    pool = nn.MaxPool2d(k)
    fast = FastMaxPool2d(pool).eval()
    x = torch.randn(*shape)
    x[..., 0, 0] = float("nan")  # NaN propagates as in the pooling
    ref = pool(x)
    out = fast(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, equal_nan=True)
    fast.train()  # training: the standard kernel (same gradients as before)
    torch.testing.assert_close(fast(x), ref, equal_nan=True)
    for bad in (nn.MaxPool2d(3, 2), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
                nn.MaxPool2d(2, return_indices=True), nn.MaxPool2d(1)):
        with pytest.raises(ValueError):
            FastMaxPool2d(bad)


@pytest.mark.parametrize("make,shape", [
    (lambda: MultiTaskUNet(channels=(4, 8, 8)), (2, 1, 30, 26)),
    (lambda: COINUNet(features=(4, 4, 8, 8, 16, 4)), (1, 3, 48, 40)),
    (lambda: EmbeddingUNet(features=(4, 8, 8), embedding_dim=4), (1, 3, 40, 36)),
])
def test_networks_use_fast_inference_layers_with_unchanged_outputs(make, shape) -> None:
    torch.manual_seed(0)
    net = make().eval()
    fast = [m for m in net.modules() if isinstance(m, (FastInstanceNorm2d, FastMaxPool2d))]
    assert fast and not any(type(m) in (nn.InstanceNorm2d, nn.MaxPool2d) for m in net.modules())
    x = torch.randn(*shape)
    with torch.no_grad():
        out = net(x)
        for m in fast:  # the reference kernels, same weights
            m.train()
        ref = net(x)
        for m in fast:
            m.eval()
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.jit.script(net)(x), out, atol=1e-5, rtol=1e-5)


def test_fast_inference_layers_keeps_state_dict_and_ineligible_layers() -> None:
    model = nn.Sequential(nn.InstanceNorm2d(4, affine=True), nn.InstanceNorm2d(4, track_running_stats=True),
                          nn.MaxPool2d(2), nn.MaxPool2d(3, 1), nn.InstanceNorm3d(4))
    keys = list(model.state_dict())
    fast_inference_layers(model)
    assert [type(m) for m in model] == [FastInstanceNorm2d, nn.InstanceNorm2d, FastMaxPool2d, nn.MaxPool2d,
                                        nn.InstanceNorm3d]
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("conv_mlp,ls", [(True, 1e-1), (False, None)])
def test_chunked_convnext_block_equals_timm_block(conv_mlp: bool, ls) -> None:
    from timm.models.convnext import ConvNeXtBlock

    from monai_ext.networks.blocks import ChunkedConvNeXtBlock, fast_convnext_blocks

    torch.manual_seed(0)
    block = ConvNeXtBlock(8, conv_mlp=conv_mlp, ls_init_value=ls).eval()
    model = nn.Sequential(block)
    keys = list(model.state_dict())
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        ref = block(x)
    fast_convnext_blocks(model)
    fast = model[0]
    assert isinstance(fast, ChunkedConvNeXtBlock) and list(model.state_dict()) == keys
    fast.rows = 13  # several pixel blocks, the last one partial (2 x 9 x 11 = 198 pixels)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=1e-5)
    out = fast(x)  # gradients enabled: timm's computation, differentiable
    out.sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert fast.mlp.fc1.weight.grad is not None


def test_lacss_encoder_uses_chunked_blocks_with_unchanged_outputs_and_torchscript() -> None:
    from monai_ext.networks.blocks import ChunkedConvNeXtBlock
    from monai_ext.networks.lacss import LacssInference

    torch.manual_seed(0)
    net = LacssInference(fpn_channels=16, drop_path_rate=0.1).eval()
    assert sum(isinstance(m, ChunkedConvNeXtBlock) for m in net.modules()) == 12  # every convnext_atto block
    x = torch.randn(1, 1, 96, 128)
    xp = net._pad(x)
    with torch.no_grad():
        fast = net.encoder(xp)
    ref = net.encoder(xp)  # gradients enabled: the reference path
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))
