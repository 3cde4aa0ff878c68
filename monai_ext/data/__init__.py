# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Data: readers for the public dataset formats (:mod:`.readers`), writers for the same formats (:mod:`.writers`).

Typical use in a bundle config::

    reader = get_reader("monuseg", root)          # or get_reader(None, root) to detect the format
    train, val = split_datalist(reader.datalist("train"), val_fraction=0.1, seed=0)
    ds = Dataset(data=train, transform=Compose([LoadRecordd(reader), ...]))
"""

from __future__ import annotations

from typing import Any

from . import writers
from .readers import (
    FORMATS,
    A431Reader,
    CVPPPReader,
    EMReader,
    FolderReader,
    LiveCellReader,
    MoNuSegReader,
    PngInstanceReader,
    Reader,
    detect_format,
    get_reader,
    split_datalist,
)

__all__ = [
    "writers",
    "FORMATS",
    "Reader",
    "LoadRecordd",
    "get_reader",
    "detect_format",
    "split_datalist",
    "MoNuSegReader",
    "PngInstanceReader",
    "LiveCellReader",
    "A431Reader",
    "EMReader",
    "CVPPPReader",
    "FolderReader",
]


def __getattr__(name: str) -> Any:
    """``LoadRecordd`` is imported on first use (it pulls in MONAI's transforms, which take seconds)."""
    if name == "LoadRecordd":
        from .readers.transforms import LoadRecordd

        return LoadRecordd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
