# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Bundle utilities: offline metadata validation and config helpers."""

from __future__ import annotations

from .distributed import cleanup_distributed, ddp_wrap, init_distributed, is_rank0, local_device
from .run import bundle_run_command
from .verify import SCHEMA_PATH, verify_bundle_layout, verify_metadata_offline

__all__ = [
    "SCHEMA_PATH",
    "verify_metadata_offline",
    "verify_bundle_layout",
    "init_distributed",
    "local_device",
    "ddp_wrap",
    "is_rank0",
    "cleanup_distributed",
    "bundle_run_command",
]
