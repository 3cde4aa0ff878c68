"""Embedding U-Net (2D / 3D, any size, TorchScript) and the EMA teacher."""

from __future__ import annotations

import copy

import pytest
import torch

from monai_ext.networks.embedding import PAPER_FEATURES, EMATeacher, EmbeddingUNet


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 37, 50), (1, 3, 7, 9)])
def test_2d_output_shape_any_size(shape: tuple[int, ...]) -> None:
    net = EmbeddingUNet(2, 3, 16, features=(4, 8, 16)).eval()
    with torch.no_grad():
        y = net(torch.rand(shape))
    assert y.shape == (shape[0], 16, *shape[2:])


def test_3d_anisotropic_pooling() -> None:
    net = EmbeddingUNet(3, 1, 8, features=(4, 8, 16), pool_size=(1, 2, 2)).eval()
    assert net.multiple == [1, 4, 4]
    with torch.no_grad():
        y = net(torch.rand(1, 1, 5, 18, 13))
    assert y.shape == (1, 8, 5, 18, 13)


def test_paper_features_and_layer_orders() -> None:
    assert PAPER_FEATURES == (16, 32, 64, 128, 256, 512)
    for order in ("bcr", "cbr", "gcr", "cr"):
        net = EmbeddingUNet(2, 3, 4, features=(8, 16), layer_order=order).eval()
        assert net(torch.rand(1, 3, 8, 8)).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError):
        EmbeddingUNet(2, 3, 4, layer_order="bxr")
    with pytest.raises(ValueError):
        EmbeddingUNet(4)
    with pytest.raises(ValueError):
        EmbeddingUNet(2, features=(8,))


def test_torchscript_matches_eager() -> None:
    net = EmbeddingUNet(2, 3, 16, features=(4, 8, 16)).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
    with pytest.raises(Exception):
        scripted(torch.rand(3, 21, 30))


def test_gradients_reach_every_parameter() -> None:
    net = EmbeddingUNet(2, 3, 4, features=(4, 8, 16))
    net(torch.rand(2, 3, 16, 16)).pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_ema_teacher_update_rule() -> None:
    student = EmbeddingUNet(2, 3, 4, features=(4, 8))
    ema = EMATeacher(student, momentum=0.9)
    assert all(not p.requires_grad for p in ema.teacher.parameters())
    before = copy.deepcopy(ema.teacher.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema.update(student)
    for (name, t), s in zip(ema.teacher.named_parameters(), student.parameters()):
        assert torch.allclose(t, 0.9 * before[name] + 0.1 * s), name
    assert int(ema.num_updates) == 1
    # buffers are left to the teacher unless copy_buffers
    ema2 = EMATeacher(student, momentum=0.9, copy_buffers=True)
    student.encoders[0][1][0][0].running_mean.fill_(3.0)
    ema2.update(student)
    assert torch.all(ema2.teacher.encoders[0][1][0][0].running_mean == 3.0)


def test_ema_warmup_and_state_dict_roundtrip() -> None:
    student = EmbeddingUNet(2, 3, 4, features=(4, 8))
    ema = EMATeacher(student, momentum=0.999, warmup=True)
    assert ema.current_momentum() == pytest.approx(0.1)
    for _ in range(5):
        ema.update(student)
    assert ema.current_momentum() == pytest.approx(6 / 15)
    other = EMATeacher(EmbeddingUNet(2, 3, 4, features=(4, 8)), momentum=0.999, warmup=True)
    other.load_state_dict(ema.state_dict())
    assert int(other.num_updates) == 5
    x = torch.rand(1, 3, 8, 8)
    ema.eval(), other.eval()
    assert torch.allclose(ema(x), other(x))
    with pytest.raises(ValueError):
        EMATeacher(student, momentum=1.5)


def test_ema_unwraps_ddp_like_wrappers() -> None:
    class Wrapper(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.module = m

    student = EmbeddingUNet(2, 3, 4, features=(4, 8))
    ema = EMATeacher(Wrapper(student), momentum=0.0)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(2.0)
    ema.update(Wrapper(student))
    assert all(torch.equal(t, s) for t, s in zip(ema.teacher.parameters(), student.parameters()))
