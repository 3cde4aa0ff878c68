"""COIN step 1 feature extractors: offline filter bank and a timm ViT loaded from a user checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_ext.data.synthetic import synth_he_tile
from monai_ext.errors import DataError
from monai_ext.pseudo.features import FeatureMap, FilterBankExtractor, ViTExtractor, get_extractor, iter_feature_tiles


@pytest.fixture(scope="module")
def tile() -> dict:
    return synth_he_tile(7, shape=(96, 80))


def test_filter_bank_shapes_and_nuclei_cluster(tile: dict) -> None:
    ext = FilterBankExtractor(device="cpu")
    fm = ext(tile["image"])
    assert fm.features.shape == (ext.dim, 96, 80) and fm.stride == 1 and fm.image_size == (96, 80)
    f = F.normalize(fm.features, dim=0).reshape(ext.dim, -1)
    nuc = torch.as_tensor(tile["label"][0].ravel() > 0)
    c_n = F.normalize(f[:, nuc].mean(1), dim=0)
    c_b = F.normalize(f[:, ~nuc].mean(1), dim=0)
    # nucleus pixels are closer to the nucleus centroid than to the background one, on average
    assert (c_n @ f[:, nuc]).mean() > (c_b @ f[:, nuc]).mean()
    with pytest.raises(DataError):
        ext(np.zeros((1, 8, 8), np.float32))


def test_filter_bank_tiles_equal_whole_image(tile: dict) -> None:
    whole = FilterBankExtractor(device="cpu")(tile["image"]).features
    tiled = FilterBankExtractor(device="cpu", tile=40)(tile["image"]).features
    assert torch.allclose(whole, tiled, atol=1e-4)


def test_filter_bank_haematoxylin_share(tile: dict) -> None:
    base = FilterBankExtractor(device="cpu")
    ext = FilterBankExtractor(device="cpu", fraction_sigmas=(2.0,), tile=40)
    assert ext.dim == base.dim + 1
    fm = ext(tile["image"]).features
    assert torch.allclose(fm[: base.dim], base(tile["image"]).features, atol=1e-4)  # existing channels unchanged
    share = fm[-1]  # standardised H / (H + E): higher on nuclei than elsewhere
    nuc = torch.as_tensor(tile["label"][0] > 0)
    assert share[nuc].mean() > share[~nuc].mean() + 0.5
    whole = FilterBankExtractor(device="cpu", fraction_sigmas=(2.0,))(tile["image"]).features
    assert torch.allclose(whole, fm, atol=1e-4)  # tiles (with the share's halo) equal the whole image


def test_iter_feature_tiles_matches_global_upsampling() -> None:
    torch.manual_seed(0)
    f = torch.randn(5, 12, 10)
    fm = FeatureMap(f, (47, 38), stride=4)
    full = torch.empty(5, 47, 38)
    for (ys, xs), t in iter_feature_tiles(fm, tile=16, normalize=False):
        full[:, ys, xs] = t
    ref = F.interpolate(f[None], size=(48, 40), mode="bilinear", align_corners=False)[0, :, :47, :38]
    # identical to upsampling the whole map (up to the border clamp of the last, partial cell)
    assert torch.allclose(full[:, :44, :36], ref[:, :44, :36], atol=1e-5)
    for _, t in iter_feature_tiles(fm, tile=16):
        assert torch.allclose(t.norm(dim=0), torch.ones(t.shape[1:]), atol=1e-4)


def test_vit_extractor_loads_a_user_checkpoint(tmp_path, tile: dict) -> None:
    import timm

    kw = {"depth": 2, "embed_dim": 32, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **kw)
    ckpt = tmp_path / "tiny_vit.pth"
    torch.save(model.state_dict(), ckpt)
    ext = ViTExtractor("vit_tiny_patch16_224", ckpt, zoom=2.0, stride=4, model_kwargs=kw, device="cpu")
    # the weights are the saved ones, not a fresh random init
    for (k, v), (_, w) in zip(model.state_dict().items(), ext.model.state_dict().items()):
        assert torch.equal(v, w), k
    fm = ext(tile["image"])
    assert fm.features.shape == (32, 24, 20) and fm.features.dtype == torch.float16 and fm.stride == 4
    assert torch.isfinite(fm.features.float()).all()
    # bounded memory: D * H/4 * W/4 half floats
    assert fm.nbytes() == 32 * 24 * 20 * 2
    with pytest.raises(DataError):
        ViTExtractor("vit_tiny_patch16_224", tmp_path / "missing.pth", model_kwargs=kw)
    assert isinstance(get_extractor("filter_bank", device="cpu"), FilterBankExtractor)
    with pytest.raises(ValueError):
        get_extractor("dino9")
