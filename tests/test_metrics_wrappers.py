"""Tests of monai_ext.metrics.wrappers: the MONAI cumulative metric and the Ignite handler in real engines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from monai.transforms import CastToTyped

from monai_ext.errors import DataError
from monai_ext.metrics import InstanceSegMetric, InstanceSegMetricHandler, aggregate_metrics, instance_metrics


def make_batch(seed: int, n: int = 3, shape: tuple[int, ...] = (24, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, *shape) GT and prediction label tensors: GT rectangles, prediction shifted and relabelled."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n):
        gt = np.zeros(shape, np.int32)
        for i in range(1, int(rng.integers(1, 8))):
            lo = [int(rng.integers(0, s - 3)) for s in shape]
            gt[tuple(slice(a, a + int(rng.integers(3, 9))) for a in lo)] = i * 7
        pred = np.roll(gt, int(rng.integers(-2, 3)), axis=0)
        pred = np.where(pred > 0, pred + 100, 0)
        gts.append(gt[None])
        preds.append(pred[None])
    return torch.as_tensor(np.stack(preds)), torch.as_tensor(np.stack(gts))


BATCHES = [make_batch(0), make_batch(1), make_batch(2, n=2, shape=(6, 10, 12))]


def pairs_of(batches):
    return [(g[b, 0].numpy(), p[b, 0].numpy()) for p, g in batches for b in range(p.shape[0])]


def test_cumulative_metric_reductions():
    names = ["aji", "pq", "ap50"]
    metric = InstanceSegMetric(names, reduction="mean")
    for pred, gt in BATCHES[:2]:  # 2D batches (3D shapes differ: separate metric below)
        out = metric(pred, gt)
        assert out.shape == (pred.shape[0], 3)
    pairs = pairs_of(BATCHES[:2])
    per_image = aggregate_metrics(pairs, mode="per_image", metrics=names)
    pooled = aggregate_metrics(pairs, mode="pooled", metrics=names)
    mean = metric.aggregate()
    assert set(mean) == set(names)
    for k in names:
        assert float(mean[k]) == pytest.approx(per_image[k])
        assert float(metric.aggregate("pooled")[k]) == pytest.approx(pooled[k])
    none = metric.aggregate("none")
    assert none["aji"].shape == (6,)
    assert none["aji"][0] == pytest.approx(instance_metrics(*pairs[0], ["aji"])["aji"])
    assert metric.get_buffer().shape == (6, 3)
    metric.reset()
    with pytest.raises(ValueError, match="no images"):
        metric.aggregate()


def test_cumulative_metric_lists_3d_and_single_name():
    metric = InstanceSegMetric("aji_plus", reduction="pooled")
    pred, gt = BATCHES[2]
    metric([p for p in pred], [g for g in gt])  # lists of channel-first tensors, 3D
    value = metric.aggregate()
    assert value.ndim == 0
    assert float(value) == pytest.approx(aggregate_metrics(pairs_of([BATCHES[2]]), "pooled", ["aji_plus"])["aji_plus"])


def test_cumulative_metric_input_errors():
    metric = InstanceSegMetric("aji")
    pred, gt = BATCHES[0]
    with pytest.raises(DataError, match="float"):
        metric(pred.float(), gt)
    with pytest.raises(DataError, match=r"\(B, 1"):
        metric(torch.cat([pred, pred], 1), torch.cat([gt, gt], 1))
    with pytest.raises(DataError, match="same shape"):
        metric(pred[:, :, :10], gt)
    with pytest.raises(ValueError, match="reduction"):
        InstanceSegMetric("aji", reduction="sum")
    lenient = InstanceSegMetric("aji", allow_integral_float=True)
    lenient(pred.float(), gt.float())
    assert float(lenient.aggregate()) == pytest.approx(
        aggregate_metrics(pairs_of([BATCHES[0]]), metrics=["aji"])["aji"]
    )


def test_handler_in_plain_ignite_engine():
    def step(engine, batch):
        return {"pred": batch[0], "label": batch[1]}

    engine = Engine(step)
    from monai.handlers import from_engine

    InstanceSegMetricHandler("aji", output_transform=from_engine(["pred", "label"])).attach(engine, "val_aji")
    InstanceSegMetricHandler(
        ["pq", "sq", "aji_adjacent"], reduction="pooled", output_transform=from_engine(["pred", "label"])
    ).attach(engine, "val_more")
    engine.run(BATCHES[:2], max_epochs=1)
    pairs = pairs_of(BATCHES[:2])
    assert engine.state.metrics["val_aji"] == pytest.approx(aggregate_metrics(pairs, metrics=["aji"])["aji"])
    pooled = aggregate_metrics(pairs, "pooled", ["pq", "sq", "aji_adjacent"])
    for k in ("pq", "sq", "aji_adjacent"):
        v = engine.state.metrics[k]
        assert isinstance(v, float)
        assert v == pytest.approx(pooled[k]) or (math.isnan(v) and math.isnan(pooled[k]))
    assert engine.state.metric_details["val_aji"].shape == (6, 1)
    assert engine.state.metric_details["val_more"].shape == (6, 3)


def test_handler_from_bundle_config_in_supervised_evaluator():
    class Passthrough(torch.nn.Module):
        """Stands in for a network + post-processing: the 'image' already holds predicted instance ids."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    data = []
    for pred, gt in BATCHES[:2]:
        for b in range(pred.shape[0]):
            data.append({"image": pred[b].float(), "label": gt[b]})
    parser = ConfigParser({
        "imports": ["$import monai"],
        "key_metric": {
            "val_aji": {
                "_target_": "monai_ext.metrics.InstanceSegMetricHandler",
                "metric_name": "aji",
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            }
        },
        "additional_metrics": {
            "val_dataset": {
                "_target_": "monai_ext.metrics.InstanceSegMetricHandler",
                "metric_name": ["pq", "ap50"],
                "reduction": "pooled",
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            }
        },
    })
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=Passthrough(),
        postprocessing=CastToTyped(keys="pred", dtype=torch.int32),
        key_val_metric=parser.get_parsed_content("key_metric"),
        additional_metrics=parser.get_parsed_content("additional_metrics"),
        decollate=True,
    )
    evaluator.run()
    pairs = pairs_of(BATCHES[:2])
    assert evaluator.state.metrics["val_aji"] == pytest.approx(aggregate_metrics(pairs, metrics=["aji"])["aji"])
    assert evaluator.state.best_metric == pytest.approx(evaluator.state.metrics["val_aji"])
    pooled = aggregate_metrics(pairs, "pooled", ["pq", "ap50"])
    assert evaluator.state.metrics["pq"] == pytest.approx(pooled["pq"])
    assert evaluator.state.metrics["ap50"] == pytest.approx(pooled["ap50"])
