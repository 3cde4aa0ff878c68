"""COIN step 0: offline stain-watershed seeds and seeds imported from another UCIS model's folder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from monai_ext.data.synthetic import synth_he_tile
from monai_ext.errors import DataError
from monai_ext.metrics import aji
from monai_ext.pseudo.seeds import FolderSeeds, StainWatershedSeeds, decode_instance_png, get_seeds
from monai_ext.transforms.coin import hed_to_rgb, hematoxylin, rgb_to_hed


@pytest.fixture(scope="module")
def tile() -> dict:
    return synth_he_tile(5, shape=(128, 128))


def test_stain_deconvolution_roundtrip(tile: dict) -> None:
    hed = rgb_to_hed(tile["image"])
    assert hed.shape == (3, 128, 128) and hed.min() >= 0
    stains = np.random.default_rng(0).uniform(0.0, 1.0, (3, 16, 16)).astype(np.float32)
    assert np.allclose(rgb_to_hed(hed_to_rgb(stains)), stains, atol=1e-3)  # inverse of each other
    h = hematoxylin(tile["image"])
    nuclei = tile["label"][0] > 0
    assert h[nuclei].mean() > 2 * h[~nuclei].mean()


def test_stain_watershed_seeds_find_nuclei(tile: dict) -> None:
    seeds = StainWatershedSeeds()(tile["image"])
    assert seeds.shape == (128, 128) and seeds.dtype == np.int32 and seeds.max() > 3
    assert aji(tile["label"][0], seeds) > 0.2
    strict = StainWatershedSeeds(threshold_scale=1.5)(tile["image"])
    assert (strict > 0).sum() < (seeds > 0).sum()
    with pytest.raises(ValueError):
        StainWatershedSeeds(threshold="magic")


def test_folder_seeds_formats(tmp_path, tile: dict) -> None:
    lab = tile["label"][0]
    tifffile.imwrite(tmp_path / "a.tif", lab.astype(np.uint16))
    np.save(tmp_path / "b.npy", lab)
    Image.fromarray(lab.astype(np.uint16)).save(tmp_path / "c.png")
    seeds = FolderSeeds(tmp_path)
    for sid in ("a", "b", "c"):
        out = seeds(tile["image"], sid)
        assert out.max() == len(np.unique(lab)) - 1
        assert aji(lab, out) == pytest.approx(1.0)
    with pytest.raises(DataError, match="no seed mask"):
        seeds(tile["image"], "missing")
    with pytest.raises(DataError, match="does not match"):
        seeds(np.zeros((3, 64, 64), np.float32), "a")
    with pytest.raises(DataError):
        FolderSeeds(tmp_path / "nope")
    assert isinstance(get_seeds("folder", folder=tmp_path), FolderSeeds)


def test_coin_rgb_encoding_has_no_modulo_wrap(tmp_path) -> None:
    """COIN writes id = B * 256 + G; ids that are multiples of 256 must survive (the public code loses them)."""
    ids = np.array([[0, 1, 256], [300, 512, 0]], np.int64)
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    rgb[..., 2] = ids // 256
    rgb[..., 1] = ids % 256
    rgb[0, 0] = 255  # white = ignore
    Image.fromarray(rgb).save(tmp_path / "x.png")
    dec = decode_instance_png(np.asarray(Image.open(tmp_path / "x.png")))
    assert dec[0, 0] == -1 and dec[0, 2] == 256 and dec[1, 1] == 512 and dec[1, 0] == 300
    out = FolderSeeds(tmp_path, relabel=False)(np.zeros((3, 2, 3), np.float32), "x")
    assert out[0, 2] == 256 and out[0, 0] == 0
