"""Helpers to run bundles the way users do: `python -m monai.bundle run` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from monai_ext.bundle.run import bundle_run_command

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
BUNDLE_NAMES = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "metadata.json").is_file()) if BUNDLES_DIR.exists() else []


def copy_bundle(name: str, dest: Path) -> Path:
    """Copy a bundle (without produced models/eval output) so runs never write into the repo."""
    dst = dest / name
    shutil.copytree(BUNDLES_DIR / name, dst, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    return dst


def run_bundle(bundle_root: Path, configs: list[str], *extra: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of ``configs`` in ``bundle_root``; raises with the log on failure."""
    cmd = bundle_run_command(bundle_root, configs, *extra)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=bundle_root)
    if proc.returncode != 0:
        raise AssertionError(
            f"bundle run failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def read_metrics(bundle_root: Path) -> dict:
    return json.loads((bundle_root / "eval" / "metrics.json").read_text())
