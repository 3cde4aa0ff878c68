"""Reliability of the real round-based bundles (COIN and EM WDA, tiny configs) run as users run it, ``python -m monai.bundle run``:

- SIGKILL in the middle of an epoch, then the same command again: it resumes from ``last.pt`` and ends with the
  same weights and validation metrics as an uninterrupted run; finished pseudo-label rounds are not rebuilt;
- determinism on CPU: the same seed and config give identical pseudo-labels (every round) in two processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_ext.bundle.run import bundle_run_command
from tests.bundle_utils import copy_bundle

# bundle -> (checkpoint keys that must be there, key of the pseudo-label round state)
BUNDLES = {
    "coin_histopathology": ({"network", "teacher", "optimizer", "lr_scheduler", "trainer", "pseudo_rounds"}, "pseudo_rounds"),
    "em_mito_wda": ({"network", "optimizer", "contrastive", "trainer", "rounds"}, "rounds"),
}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
KILL_EPOCH = 2  # killed after the first iteration of this epoch: last.pt holds epoch 1, round 1 is on disk


def _train(root: Path, *configs: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = bundle_run_command(root, ["train.json", "tiny.json", *configs])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root, env={**os.environ, **ENV})
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode})\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _add_kill_config(root: Path) -> str:
    """An extra config merged last: the bundle's own ``run`` list, preceded by a handler that SIGKILLs the process
    after the first iteration of epoch ``KILL_EPOCH`` (a crash mid-epoch, deterministic in time)."""
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "tiny.json")])
    run = list(parser.get("run"))
    imports = [*parser.get("imports", []), "$import os", "$import signal", "$from ignite.engine import Events"]
    kill = (  # no "import" word in an expression: MONAI would try to parse it as an import statement
        "$@train#trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: os.kill(os.getpid(), "
        f"signal.SIGKILL) if e.state.epoch == {KILL_EPOCH} and (e.state.iteration - 1) % e.state.epoch_length == 0 "
        "else None)"
    )
    (root / "configs" / "kill.json").write_text(json.dumps({"imports": imports, "run": [kill, *run]}))
    return "kill.json"


def _val_metrics(log: str) -> dict[str, float]:
    """The validation metrics of the last epoch that logged ``val_aji``."""
    lines = [ln for ln in log.splitlines() if "Metrics --" in ln and "val_aji" in ln]
    assert lines, f"no validation metrics in the log:\n{log[-3000:]}"
    return {k: float(v) for k, v in re.findall(r"(\w+): (-?[\d.]+(?:e-?\d+)?)", lines[-1].split("Metrics --")[1])}


def _pseudo_arrays(root: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for f in sorted((root / "models" / "pseudo_labels").glob("round_*/*.npz")):
        with np.load(f) as data:
            out[f"{f.parent.name}/{f.name}"] = {k: data[k] for k in data.files}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_sigkill_mid_epoch_resumes_to_the_same_result_and_rounds_are_deterministic(bundle: str, tmp_path: Path) -> None:
    keys, rounds_key = BUNDLES[bundle]
    run = copy_bundle(bundle, tmp_path / "killed")
    killed = _train(run, _add_kill_config(run), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = torch.load(run / "models" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == KILL_EPOCH - 1
    assert keys | {"rng"} <= set(ckpt)
    assert ckpt[rounds_key]["rounds_done"] in ([0], [0, 1])  # saved before or after round 1 was built ...
    assert (run / "models" / "pseudo_labels" / "round_01" / "DONE").is_file()  # ... which finished before the kill
    assert not (run / "models" / "model.pt").exists()

    ref = copy_bundle(bundle, tmp_path / "ref")  # the uninterrupted run
    ref_log = _train(ref)
    ref_log = ref_log.stdout + ref_log.stderr

    # the same command again resumes; rounds finished before the kill are not rebuilt
    resumed = _train(run)
    log = resumed.stdout + resumed.stderr
    assert "resumed from" in log, log[-3000:]
    assert "building pseudo-labels of round 0" not in log and "building pseudo-labels of round 1" not in log

    # determinism: the reference run builds every round exactly as the killed + resumed processes did
    ref_pseudo, run_pseudo = _pseudo_arrays(ref), _pseudo_arrays(run)
    assert set(ref_pseudo) == set(run_pseudo) and any(k.startswith("round_01/") for k in ref_pseudo)
    for name, arrays in ref_pseudo.items():
        assert arrays.keys() == run_pseudo[name].keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, run_pseudo[name][key], err_msg=f"{name}:{key}")
    for rdir in sorted((ref / "models" / "pseudo_labels").glob("round_*")):
        stats = [json.loads((r / "models" / "pseudo_labels" / rdir.name / "stats.json").read_text()) for r in (ref, run)]
        for st in stats:
            st.pop("seconds", None)  # wall time, the only statistic allowed to differ
        assert stats[0] == stats[1], rdir.name

    # ... and it ends where the uninterrupted run ended
    ref_w = torch.load(ref / "models" / "model.pt", weights_only=True)
    run_w = torch.load(run / "models" / "model.pt", weights_only=True)
    assert ref_w.keys() == run_w.keys()
    for key in ref_w:
        torch.testing.assert_close(run_w[key], ref_w[key], rtol=1e-5, atol=1e-6, msg=key)
    ref_m, run_m = _val_metrics(ref_log), _val_metrics(log)
    assert {"val_aji", "pq", "fg_dice"} <= set(ref_m)
    for key, value in ref_m.items():
        assert abs(run_m[key] - value) <= 1e-3, (key, run_m[key], value)


@pytest.mark.slow
def test_nan_loss_in_a_bundle_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    """The loss turns NaN from epoch 2 on (as after a divergence): the run stops with a TrainingError naming the
    epoch and the samples, the weights saved at epoch 1 stay finite and loadable, and no final model is written."""
    root = copy_bundle("coin_histopathology", tmp_path)
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "tiny.json")])
    poison = (
        "$setattr(@train#trainer, 'loss_function', (lambda f: lambda *a, **k: f(*a, **k) * "
        "(float('nan') if @train#trainer.state.epoch >= 2 else 1.0))(@train#trainer.loss_function))"
    )
    (root / "configs" / "nan.json").write_text(json.dumps({"run": [poison, *parser.get("run")]}))
    proc = _train(root, "nan.json", check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "TrainingError" in err and "non-finite loss nan at epoch 2, iteration 3" in err, err[-3000:]
    assert "the last checkpoint is intact" in err and "TCGA-" in err  # names the samples of the batch
    ckpt = torch.load(root / "models" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["network"].values() if v.is_floating_point())
    assert not (root / "models" / "model.pt").exists()
