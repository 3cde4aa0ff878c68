# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Build the ``python -m monai.bundle run`` command line of a bundle (used by the CLI, demos and tests)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["bundle_run_command"]


def bundle_run_command(bundle_root: str | Path, configs: list[str], *args: str, verb: str = "run") -> list[str]:
    """``python -m monai.bundle <verb>`` with ``configs`` (names under ``<bundle>/configs``, merged in order;
    names that do not exist are skipped), the bundle's metadata and logging config, and ``--bundle_root``."""
    root = Path(bundle_root)
    files = [str(root / "configs" / c) for c in configs if (root / "configs" / c).exists()]
    return [
        sys.executable, "-m", "monai.bundle", verb,
        "--config_file", "[" + ",".join(repr(f) for f in files) + "]",
        "--meta_file", str(root / "configs" / "metadata.json"),
        "--logging_file", str(root / "configs" / "logging.conf"),
        "--bundle_root", str(root),
        *args,
    ]
