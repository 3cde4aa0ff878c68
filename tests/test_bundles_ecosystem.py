"""Every bundle inside the MONAI ecosystem, for real: MLflow tracking (sqlite), TorchScript export through
``python -m monai.bundle ckpt_export``, 2-process DDP on CPU (gloo) and a MONAI Label server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser

from monai_ext.bundle.run import bundle_run_command
from tests.bundle_utils import BUNDLE_NAMES, copy_bundle, run_bundle

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not BUNDLE_NAMES, reason="no bundles yet")]

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Train each bundle once (tiny config) with MLflow tracking into a sqlite store; reused by the tests."""
    cache: dict[str, tuple[Path, str]] = {}

    def get(name: str) -> tuple[Path, str]:
        if name not in cache:
            root = copy_bundle(name, tmp_path_factory.mktemp(name))
            uri = f"sqlite:///{root / 'mlruns.db'}"
            run_bundle(root, ["train.json", "tiny.json"], "--tracking", "mlflow", "--tracking_uri", uri,
                       "--experiment_name", f"test_{name}")
            cache[name] = (root, uri)
        return cache[name]

    return get


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_mlflow_run_is_recorded(name: str, trained) -> None:
    from mlflow.tracking import MlflowClient

    root, uri = trained(name)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"test_{name}")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert runs, "no MLflow run recorded"
    run = runs[0]
    assert "max_epochs" in run.data.params
    assert any(k.startswith("train_loss") or k == "train_loss" for k in run.data.metrics), run.data.metrics.keys()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert history and all(np.isfinite(m.value) for m in history)
    assert "learning_rate" in run.data.params, sorted(run.data.params)  # the bundle's own hyperparameters
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "overlays"} <= artifacts, artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/model.pt"]
    overlays = [a.path for a in client.list_artifacts(run.info.run_id, "overlays/validation")]
    assert overlays and all(p.endswith(".png") for p in overlays), overlays
    if name in ("coin_histopathology", "em_mito_wda"):  # round-based bundles: per-round pseudo-label statistics
        rounds = [k for k in run.data.metrics if k.startswith("pseudo_round/")]
        assert rounds, sorted(run.data.metrics)
        plots = [a.path for a in client.list_artifacts(run.info.run_id, "overlays/pseudo_rounds")]
        assert plots, "no per-round pseudo-label plot logged"


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_ckpt_export_torchscript_matches_eager(name: str, trained, tmp_path: Path) -> None:
    root, _ = trained(name)
    ts_path = tmp_path / "model.ts"
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(ts_path), "--ckpt_file", str(root / "models" / "model.pt"),
        "--meta_file", str(root / "configs" / "metadata.json"),
        "--config_file", str([str(root / "configs" / f) for f in ("inference.json", "tiny.json")]),
        "--bundle_root", str(root),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / f) for f in ("inference.json", "tiny.json")])
    parser["bundle_root"] = str(root)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    channels = meta["network_data_format"]["inputs"]["image"]["num_channels"]
    x = torch.rand(1, channels, 96, 128)
    with torch.no_grad():
        eager, ts = net(x), scripted(x)
    eager = eager["pred"] if isinstance(eager, dict) else eager
    ts = ts["pred"] if isinstance(ts, dict) else ts
    torch.testing.assert_close(ts, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_multi_gpu_config_on_two_cpu_processes(name: str, tmp_path: Path) -> None:
    root = copy_bundle(name, tmp_path)
    dump = tmp_path / "ranks"
    (root / "configs" / "rank_dump.json").write_text(json.dumps(
        {"+train#handlers": [{"_target_": "rank_dump.RankDump", "network": "@network", "out_dir": str(dump)}]}
    ))
    cmd = bundle_run_command(root, ["train.json", "multi_gpu_train.json", "tiny.json", "rank_dump.json"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd = torchrun + cmd[1:]  # drop the interpreter: torchrun takes `-m monai.bundle run ...`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROGRAMS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], msg=f"ranks disagree on {k}")
    assert (root / "models" / "model.pt").is_file()


def _sample_image(name: str, root: Path, out: Path) -> Path:
    """A 2D test image of the bundle's sample data as a file MONAI Label's datastore accepts."""
    from monai_ext.data import get_reader
    from monai_ext.data.sample import ensure_sample_data

    if name == "em_mito_wda":
        reader = get_reader("em", Path(ensure_sample_data(name)) / "target")
    else:
        reader = get_reader(None, ensure_sample_data(name))
    rec = reader.datalist()[0]
    img = reader.load(rec)["image"]
    arr = np.moveaxis(img, 0, -1) if img.shape[0] in (3, 4) else img[0]
    arr = (np.clip(arr, 0, 1) * 255).astype(np.uint8)
    path = out / f"sample_{name}.tif"
    tifffile.imwrite(path, arr)
    return path


@pytest.mark.label
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_monailabel_serves_trained_bundle(name: str, trained, tmp_path: Path) -> None:
    from tests.test_monailabel import check_bundle_served

    root, _ = trained(name)
    # the bundle was trained with tiny.json's overrides (smaller network): the served inference must use them,
    # which is what configs/monailabel.json is for
    served_overrides = root / "configs" / "monailabel.json"
    extra = json.loads(served_overrides.read_text()) if served_overrides.is_file() else {}
    served_overrides.write_text(json.dumps({**json.loads((root / "configs" / "tiny.json").read_text()), **extra}))
    image = _sample_image(name, root, tmp_path)
    label, model = check_bundle_served(root, image, tmp_path / "ml")
    assert label.ndim == 2 and label.shape == tifffile.imread(image).shape[:2]
    assert model["dimension"] == 2
