# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""monai_ext.losses."""

from __future__ import annotations

__all__: list[str] = []
