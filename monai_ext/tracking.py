# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""MLflow robustness for ``--tracking mlflow``: skip an unusable tracking URI, log what MONAI does not.

- :func:`tracking_disabled` decides, in a second or so, whether MONAI's injected ``MLFlowHandler``
  should be disabled (bundles put it in ``is_not_rank0``): an unreachable server or a ``file://``
  URI (which monai 1.6.1 rejects) no longer kills training, it logs a warning and trains untracked.
- :class:`MLflowExtras` (in ``train#handlers``) adds to the run MONAI's handler opened: the bundle's
  hyperparameters, per-round pseudo-label statistics (metrics with ``step=round`` and a score
  histogram PNG), the final checkpoint(s) and overlay PNGs.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_ext.handlers._ignite import Engine, Events

__all__ = ["tracking_disabled", "effective_tracking_uri", "MLflowExtras", "flatten_params"]

logger = logging.getLogger(__name__)

_DB_SCHEMES = ("postgresql", "mysql", "mssql")
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


def effective_tracking_uri(tracking_uri: str | None) -> str | None:
    """The URI MONAI's ``MLFlowHandler`` will use: ``MLFLOW_TRACKING_URI`` wins over the argument."""
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri


def _http_reachable(uri: str, timeout: float) -> tuple[bool, str]:
    """One GET of ``<uri>/health`` (MLflow's health endpoint); any HTTP answer means a server is there."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:  # the server answered (401/403/404 ...): it is there
        return True, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{type(reason).__name__}: {reason}"


def _tcp_reachable(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, "connected"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def tracking_disabled(tracking_uri: str | None, timeout: float = 2.0) -> bool:
    """Whether MLflow tracking must be switched off for ``tracking_uri``, with a WARNING saying why.

    - ``http(s)://``: one request to ``<uri>/health`` with a ``timeout`` s limit (no MLflow retries);
      no answer -> ``"MLflow tracking server <uri> unreachable: training continues without tracking"``, True.
    - ``sqlite:///<path>``: the database's folder is created; False (True with a warning if it cannot be).
    - ``file://`` or a plain path: monai 1.6.1 rejects these; warning suggesting ``sqlite:///<path>/mlruns.db``, True.
    - ``postgresql://`` / ``mysql://`` / ``mssql://``: a TCP connection check of the database host.
    - None / empty: MONAI's default (a local SQLite database); False.

    ``MLFLOW_TRACKING_URI``, when set, is what MONAI uses, so it is what gets checked.

    Bundles use it as ``"is_not_rank0": "$monai_ext.tracking.tracking_disabled(@tracking_uri) or ..."``:
    MONAI's ``--tracking mlflow`` only adds ``is_not_rank0`` when the config lacks it, and disables its
    MLFlowHandlers when it is true.
    """
    uri = effective_tracking_uri(tracking_uri)
    if not uri:
        return False
    uri = str(uri)
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        ok, why = _http_reachable(uri, timeout)
        if not ok:
            logger.warning("MLflow tracking server %s unreachable: training continues without tracking (%s)", uri, why)
            return True
        return False
    if scheme == "sqlite":
        db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if db and db != ":memory:":
            folder = Path(db).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                logger.warning("MLflow tracking database folder %s cannot be created (%s): training continues "
                               "without tracking", folder, exc)
                return True
        return False
    if scheme == "file" or (len(scheme) <= 1 and "://" not in uri):  # "C:\\..." parses as scheme "c"
        path = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri).expanduser().absolute()
        logger.warning(
            "MLflow tracking URI %s is a file store, which monai 1.6.1 rejects: training continues without tracking; "
            "use a SQLite database instead, e.g. --tracking_uri sqlite:///%s", uri, path / "mlruns.db")
        return True
    if "://" not in uri:
        logger.warning("MLflow tracking URI %s is not a URL (monai 1.6.1 accepts sqlite:///<path> or a server URL): "
                       "training continues without tracking", uri)
        return True
    if scheme.split("+")[0] in _DB_SCHEMES and parsed.hostname:
        port = parsed.port or _DEFAULT_PORTS[scheme.split("+")[0]]
        ok, why = _tcp_reachable(parsed.hostname, port, timeout)
        if not ok:
            logger.warning("MLflow tracking database %s unreachable: training continues without tracking (%s)",
                           parsed._replace(netloc=parsed.hostname).geturl(), why)
            return True
    return False


def flatten_params(params: Mapping[str, Any], prefix: str = "", max_len: int = 500) -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` strings (values cut to ``max_len`` characters)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}.", max_len))
        else:
            text = str(value)
            out[name] = text if len(text) <= max_len else text[: max_len - 3] + "..."
    return out


class MLflowExtras:
    """Log hyperparameters, pseudo-label rounds, checkpoints and overlays to the run MONAI tracks.

    It writes into the run of MONAI's ``MLFlowHandler`` attached to the same engine (the one
    ``--tracking mlflow`` injects; found on the engine, so no URI or run name is repeated here), or else
    into the active ``mlflow`` fluent run. With neither (tracking off or disabled) it does nothing.

    MONAI's handler is appended after the bundle's handlers and opens its run on ``STARTED``. So
    parameters are logged at the first ``EPOCH_STARTED``, pseudo-label rounds when they appear (checked
    at every epoch start and end), and the files on ``COMPLETED`` by a handler registered at ``STARTED``,
    i.e. after the checkpoint writers, so the final checkpoint exists; should MONAI's handler have closed
    the run by then (``close_on_complete``), the stored run id is used (MLflow accepts logging into a
    finished run).

    Args:
        params: hyperparameters (nested dicts are flattened to ``a.b``); logged once, keys already
            in the run (e.g. from a resumed run) are skipped.
        artifacts: files or folders logged under ``artifact_path`` on completion (e.g. ``models/model.pt``);
            missing ones are skipped with a warning.
        overlay_dir: folder whose ``*.png`` (recursively, at most ``max_overlays``) go under ``overlays/``.
        stats_attr: engine state attribute holding the current round's statistics (``PseudoLabelRounds``
            sets ``pseudo_stats``, a dict with ``round``).
        metric_prefix: scalar statistic ``k`` of round ``r`` is metric ``<prefix>k`` at ``step=r``.
        histogram_key: statistic holding a list of scores, drawn as ``pseudo_labels/round_XX_<key>.png``.
        artifact_path: run folder of ``artifacts``.
        max_overlays: cap on overlay files.
    """

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        artifacts: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        overlay_dir: str | os.PathLike | None = None,
        stats_attr: str = "pseudo_stats",
        metric_prefix: str = "pseudo_round/",
        histogram_key: str = "scores",
        artifact_path: str = "checkpoints",
        max_overlays: int = 200,
    ) -> None:
        self.params = dict(params or {})
        if artifacts is None:
            self.artifacts: list[str] = []
        elif isinstance(artifacts, (str, os.PathLike)):
            self.artifacts = [os.fspath(artifacts)]
        else:
            self.artifacts = [os.fspath(a) for a in artifacts]
        self.overlay_dir = os.fspath(overlay_dir) if overlay_dir else None
        self.stats_attr = stats_attr
        self.metric_prefix = metric_prefix
        self.histogram_key = histogram_key
        self.artifact_path = artifact_path
        self.max_overlays = int(max_overlays)
        self._client: Any = None
        self._run_id: str | None = None
        self._params_logged = False
        self._rounds_logged: set[int] = set()

    # -- wiring ----------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch)
        engine.add_event_handler(Events.STARTED, self._register_completed)

    def _register_completed(self, engine: Engine) -> None:
        """Register the ``COMPLETED`` logging at run start, i.e. after every handler attached with the bundle's
        config (checkpoint writers included), so that the final checkpoint exists when it is logged."""
        if not engine.has_event_handler(self._on_completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._on_completed)

    def _find_run(self, engine: Engine) -> tuple[Any, str] | None:
        """(client, run id) of the MLFlowHandler on ``engine``, else of the active fluent run."""
        from monai.handlers import MLFlowHandler

        for handlers in getattr(engine, "_event_handlers", {}).values():
            for entry in handlers:
                owner = getattr(entry[0], "__self__", None)
                if isinstance(owner, MLFlowHandler) and owner.cur_run is not None:
                    return owner.client, owner.cur_run.info.run_id
        import mlflow

        run = mlflow.active_run()
        if run is not None:
            return mlflow.MlflowClient(), run.info.run_id
        return None

    def _run(self, engine: Engine) -> tuple[Any, str] | None:
        found = self._find_run(engine)
        if found is not None:
            self._client, self._run_id = found
        if self._run_id is None:
            return None
        return self._client, self._run_id

    # -- events ----------------------------------------------------------------------------------
    def _on_epoch(self, engine: Engine) -> None:
        run = self._run(engine)
        if run is None:
            return
        client, run_id = run
        try:
            if not self._params_logged:
                self._log_params(client, run_id)
            self._log_round(client, run_id, engine)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            logger.warning("MLflowExtras: logging to run %s failed: %s", run_id, exc)

    def _on_completed(self, engine: Engine) -> None:
        run = self._run(engine)
        if run is None:
            return
        client, run_id = run
        try:
            if not self._params_logged:
                self._log_params(client, run_id)
            self._log_round(client, run_id, engine)
            self._log_files(client, run_id)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            logger.warning("MLflowExtras: logging to run %s failed: %s", run_id, exc)

    # -- logging ---------------------------------------------------------------------------------
    def _log_params(self, client: Any, run_id: str) -> None:
        from mlflow.entities import Param

        self._params_logged = True
        params = flatten_params(self.params)
        existing = client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        changed = [k for k, v in params.items() if k in existing and existing[k] != v]
        if changed:
            logger.warning("MLflowExtras: parameters %s already logged with other values; kept the old ones", changed)
        for i in range(0, len(new), 100):  # MLflow's batch limit
            client.log_batch(run_id, params=new[i: i + 100])

    def _log_round(self, client: Any, run_id: str, engine: Engine) -> None:
        stats = getattr(engine.state, self.stats_attr, None)
        if not isinstance(stats, Mapping):
            return
        rnd = stats.get("round", getattr(engine.state, "pseudo_round", None))
        if rnd is None or int(rnd) in self._rounds_logged:
            return
        rnd = int(rnd)
        self._rounds_logged.add(rnd)
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{self.metric_prefix}{k}", float(v), now, rnd)
            for k, v in stats.items()
            if k != "round" and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if metrics:
            client.log_batch(run_id, metrics=metrics)
        scores = stats.get(self.histogram_key)
        if isinstance(scores, (list, tuple)) and scores:
            client.log_image(run_id, self._histogram(scores, rnd), artifact_file=(
                f"pseudo_labels/round_{rnd:02d}_{self.histogram_key}.png"))

    def _histogram(self, scores: Sequence[float], rnd: int) -> Any:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import numpy as np
        from matplotlib.figure import Figure
        from PIL import Image

        values = np.asarray(scores, dtype=float)
        values = values[np.isfinite(values)]
        fig = Figure(figsize=(4, 3), dpi=100)
        ax = fig.subplots()
        ax.hist(values, bins=20)
        ax.set_xlabel(self.histogram_key)
        ax.set_ylabel("count")
        ax.set_title(f"pseudo-labels, round {rnd} (n={values.size})")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    def _log_files(self, client: Any, run_id: str) -> None:
        for item in self.artifacts:
            if os.path.isfile(item):
                client.log_artifact(run_id, item, artifact_path=self.artifact_path)
            elif os.path.isdir(item):
                client.log_artifacts(run_id, item, artifact_path=f"{self.artifact_path}/{Path(item).name}")
            else:
                logger.warning("MLflowExtras: artifact %s does not exist (is the checkpoint handler attached "
                               "before MLflowExtras?)", item)
        if self.overlay_dir and os.path.isdir(self.overlay_dir):
            files = sorted(glob.glob(os.path.join(self.overlay_dir, "**", "*.png"), recursive=True))
            if len(files) > self.max_overlays:
                logger.info("MLflowExtras: logging the first %d of %d overlays", self.max_overlays, len(files))
            for f in files[: self.max_overlays]:
                rel = os.path.relpath(os.path.dirname(f), self.overlay_dir)
                client.log_artifact(run_id, f, artifact_path="overlays" if rel == "." else f"overlays/{rel}")
