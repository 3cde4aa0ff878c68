# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Shared components of the weaklabel-bundles MONAI bundles.

Sub-packages (imported on demand so that ``import monai_ext`` stays cheap):
``data`` readers and synthetic generators, ``transforms`` dictionary transforms, ``networks``,
``losses``, ``pseudo`` pseudo-label machinery, ``postprocess``, ``metrics``, ``handlers`` Ignite
handlers, ``engines`` trainers, ``bundle`` bundle utilities, ``cli`` the command line.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import DataError, StorageError, TrainingError  # noqa: E402
from .utils import get_device, set_seed  # noqa: E402

__all__ = ["__version__", "DataError", "StorageError", "TrainingError", "get_device", "set_seed"]
