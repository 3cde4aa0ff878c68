"""MLflow robustness (monai_ext.tracking): unreachable / rejected tracking URIs, MLflowExtras logging.

The end-to-end tests train the throwaway bundle with ``python -m monai.bundle run ... --tracking mlflow``
in a subprocess, as users do, and read the run back with ``MlflowClient``.
"""

from __future__ import annotations

import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_toy_bundle import make_toy_bundle
from monai_ext.tracking import MLflowExtras, flatten_params, tracking_disabled


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def http_server() -> Iterator[str]:
    """A loopback HTTP server answering 200 on /health and 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------
# tracking_disabled
# ------------------------------------------------------------------------------------------------
def test_unreachable_server_disables_tracking_fast(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="monai_ext.tracking"):
        assert tracking_disabled(uri, timeout=1.0) is True
    assert time.monotonic() - start < 5
    assert f"MLflow tracking server {uri} unreachable: training continues without tracking" in caplog.text


def test_reachable_server_keeps_tracking(http_server: str, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_disabled(http_server) is False
    assert tracking_disabled(http_server + "/prefix") is False  # a 404 still proves a server is there


def test_sqlite_creates_folder_and_file_store_is_refused(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "a" / "b" / "mlruns.db"
    assert tracking_disabled(f"sqlite:///{db}") is False
    assert db.parent.is_dir()
    assert tracking_disabled(None) is False
    with caplog.at_level(logging.WARNING, logger="monai_ext.tracking"):
        assert tracking_disabled(f"file://{tmp_path}/mlruns") is True
        assert tracking_disabled(str(tmp_path / "mlruns")) is True
    assert caplog.text.count("sqlite:///") == 2 and "monai 1.6.1 rejects" in caplog.text


def test_env_uri_wins(tmp_path: Path, monkeypatch) -> None:
    """MONAI's MLFlowHandler prefers MLFLOW_TRACKING_URI over its argument, so that is what is checked."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    assert tracking_disabled(f"sqlite:///{tmp_path}/mlruns.db") is True


def test_flatten_params() -> None:
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x" * 600}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x" * 497 + "..."}


# ------------------------------------------------------------------------------------------------
# MLflowExtras in process
# ------------------------------------------------------------------------------------------------
def _engine(max_epochs: int = 2):
    from ignite.engine import Engine, Events

    engine = Engine(lambda e, b: 0.0)

    @engine.on(Events.STARTED)
    def _round0(e: Engine) -> None:
        e.state.pseudo_stats = {"round": 0, "threshold": 0.5, "scores": [0.2, 0.9]}

    return engine


def test_extras_without_a_run_do_nothing(tmp_path: Path) -> None:
    engine = _engine()
    MLflowExtras(params={"lr": 0.1}, artifacts=[tmp_path / "missing.pt"]).attach(engine)
    engine.run([0, 1], max_epochs=2)  # no MLflow run anywhere: silently nothing


def test_extras_log_into_the_active_fluent_run(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("extras", artifact_location=(tmp_path / "artifacts").as_uri())
        (tmp_path / "model.pt").write_bytes(b"weights")
        with mlflow.start_run(experiment_id=exp) as run:
            engine = _engine()
            MLflowExtras(params={"opt": {"lr": 0.1}}, artifacts=[tmp_path / "model.pt"]).attach(engine)
            engine.run([0, 1], max_epochs=2)
        client = mlflow.MlflowClient(uri)
        data = client.get_run(run.info.run_id).data
        assert data.params == {"opt.lr": "0.1"}
        assert data.metrics["pseudo_round/threshold"] == 0.5
        names = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        names |= {a.path for a in client.list_artifacts(run.info.run_id, "pseudo_labels")}
        assert names == {"checkpoints/model.pt", "pseudo_labels/round_00_scores.png"}
    finally:
        mlflow.set_tracking_uri(None)


# ------------------------------------------------------------------------------------------------
# end to end: python -m monai.bundle run --tracking mlflow
# ------------------------------------------------------------------------------------------------
def _train(bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "train.json"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--logging_file", str(bundle / "configs" / "logging.conf"),
        "--bundle_root", str(bundle),
        "--tracking", "mlflow", *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**env, "PYTHONUNBUFFERED": "1"},
                          cwd=bundle)
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow
def test_bundle_run_logs_params_rounds_and_artifacts(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    bundle = make_toy_bundle(tmp_path, "toy_cells", network="unet", with_model=False)
    uri = f"sqlite:///{tmp_path}/tracking/mlruns.db"
    _train(bundle, "--tracking_uri", uri, "--experiment_name", "toy", "--run_name", "toy_run")

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("toy")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "toy_run" and run.info.status == "FINISHED"
    params = run.data.params
    assert {k: params[k] for k in ("epochs", "learning_rate", "batch_size", "max_epochs")} == {
        "epochs": "2", "learning_rate": "0.01", "batch_size": "2", "max_epochs": "2"}
    rounds = client.get_metric_history(run.info.run_id, "pseudo_round/threshold")
    assert sorted((m.step, round(m.value, 6)) for m in rounds) == [(0, 0.5), (1, 0.6)]
    assert "pseudo_threshold" in run.data.metrics and "train_loss" in run.data.metrics  # MONAI's per-epoch log

    def files(path: str | None = None) -> set[str]:
        out: set[str] = set()
        for a in client.list_artifacts(run.info.run_id, path):
            out |= files(a.path) if a.is_dir else {a.path}
        return out

    logged = files()
    assert {"checkpoints/model.pt", "overlays/round_0.png", "overlays/round_1.png",
            "pseudo_labels/round_00_scores.png", "pseudo_labels/round_01_scores.png"} <= logged
    assert any(p.startswith("config_") for p in logged)  # MONAI's own artifact is still there


@pytest.mark.slow
def test_bundle_run_survives_unreachable_server(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path, "toy_cells", network="unet", with_model=False)
    uri = f"http://127.0.0.1:{_closed_port()}"
    proc = _train(bundle, "--tracking_uri", uri)
    assert f"MLflow tracking server {uri} unreachable: training continues without tracking" in proc.stdout + proc.stderr
    assert (bundle / "models" / "model.pt").is_file()
