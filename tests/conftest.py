"""Shared pytest fixtures: isolated data cache, single-threaded torch for stable CPU timing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the sample-data cache at a per-session temporary folder, never the user's home."""
    cache = tmp_path_factory.mktemp("weaklabel_cache")
    os.environ["WEAKLABEL_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
