# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Bundle utilities: offline metadata validation and config helpers."""

from __future__ import annotations

from .verify import SCHEMA_PATH, verify_bundle_layout, verify_metadata_offline

__all__ = ["SCHEMA_PATH", "verify_metadata_offline", "verify_bundle_layout"]
