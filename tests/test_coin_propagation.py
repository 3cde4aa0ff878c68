"""COIN step 1: CAP centroids, cosine similarity, OT push (POT Sinkhorn), optional CRF, propagation to instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.data.synthetic import make_dataset
from monai_ext.errors import DataError
from monai_ext.pseudo.features import FeatureMap, FilterBankExtractor
from monai_ext.pseudo.propagation import (
    CentroidAccumulator,
    PixelPropagation,
    cosine_similarity_map,
    crf_available,
    minmax,
    ot_push,
)
from monai_ext.pseudo.seeds import StainWatershedSeeds


def test_centroids_and_cosine_similarity() -> None:
    f = torch.zeros(2, 4, 4)
    f[0, :2] = 1.0  # top half points along e0, bottom half along e1
    f[1, 2:] = 1.0
    fm = FeatureMap(f, (4, 4))
    seeds = np.zeros((4, 4), np.int32)
    seeds[:2] = 1
    acc = CentroidAccumulator()
    bg = acc.add(fm, seeds, tile=3)
    assert torch.allclose(acc.foreground(), torch.tensor([1.0, 0.0])) and torch.allclose(bg, torch.tensor([0.0, 1.0]))
    sim = cosine_similarity_map(fm, torch.stack([bg, acc.foreground()]), tile=3)
    assert sim.shape == (2, 4, 4) and torch.allclose(sim[1, :2], torch.ones(2, 4))
    state = acc.state_dict()
    acc2 = CentroidAccumulator()
    acc2.load_state_dict(state)
    assert torch.equal(acc2.foreground(), acc.foreground())
    with pytest.raises(DataError):
        CentroidAccumulator().foreground()
    with pytest.raises(DataError):
        acc.add(fm, np.zeros((3, 3)), tile=3)


def test_ot_push_sharpens_and_is_robust_to_lambda() -> None:
    torch.manual_seed(0)
    fg = torch.rand(32, 32) * 0.3
    fg[8:20, 8:20] += 0.5  # a minority of foreground pixels
    sim = torch.stack([1 - fg, fg])
    masks = []
    for reg in (0.01, 0.1, 0.4):
        out = ot_push(sim, reg=reg)
        assert out.shape == (2, 32, 32) and torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
        masks.append((out[1] > out[0]).numpy())
    truth = np.zeros((32, 32), bool)
    truth[8:20, 8:20] = True
    for m in masks:
        assert (m & truth).sum() / (m | truth).sum() > 0.8
    with pytest.raises(ValueError):
        ot_push(sim, reg=0.0)
    with pytest.raises(DataError):
        ot_push(sim[:1])
    assert torch.allclose(minmax(sim).amax(dim=(1, 2)), torch.ones(2))


@pytest.fixture(scope="module")
def data() -> list[dict]:
    return make_dataset("he", 3, seed=77, shape=(128, 128))


def test_propagation_raises_sensitivity(data: list[dict]) -> None:
    seeder = StainWatershedSeeds()
    seeds = [seeder(d["image"]) for d in data]
    prop = PixelPropagation(FilterBankExtractor(device="cpu")).fit(zip([d["image"] for d in data], seeds))
    assert prop.centroids.n_images == 3
    fn_seed, fn_prop = [], []
    for d, s in zip(data, seeds):
        inst = prop(d["image"], s)
        assert inst.shape == s.shape and inst.dtype == np.int32 and inst.max() > 0
        gt = d["label"][0] > 0
        fn_seed.append((gt & (s == 0)).sum() / gt.sum())
        fn_prop.append((gt & (inst == 0)).sum() / gt.sum())
    # Step 1's purpose (supplement Tab. 10-11): fewer missed nucleus pixels than the seeds
    assert np.mean(fn_prop) < np.mean(fn_seed)
    no_ot = PixelPropagation(FilterBankExtractor(device="cpu"), use_ot=False, accumulate=False)
    assert no_ot(data[0]["image"], seeds[0]).max() > 0


def test_crf_is_optional(data: list[dict]) -> None:
    if crf_available():
        pytest.skip("pydensecrf2 is installed: the optional path is available")
    with pytest.raises(ImportError, match="pydensecrf2"):
        PixelPropagation(FilterBankExtractor(device="cpu"), crf=True)
