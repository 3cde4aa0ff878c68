# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Dataset readers: one class per on-disk format, sharing :class:`~.base.Reader`.

``reader.datalist(split)`` lists cheap validated records; ``reader.load(record)`` (or :class:`LoadRecordd` in a
MONAI ``Compose``) returns a loaded sample (``docs/CONVENTIONS.md``). Format names: ``monuseg``, ``png_instance``
(TNBC / COIN), ``livecell``, ``a431``, ``em``, ``cvppp``, ``folder``.
"""

from __future__ import annotations

from typing import Any

from .a431 import A431Reader
from .base import Reader, split_datalist
from .codecs import cvppp_palette, decode_coin_mask, encode_coin_mask
from .cvppp import CVPPPReader
from .em import EMReader, Volume
from .files import read_points
from .folder import FolderReader
from .livecell import LiveCellReader
from .monuseg import MoNuSegReader, parse_aperio_xml, rasterize_polygons
from .png_instance import PngInstanceReader
from .registry import FORMATS, READERS, detect_format, get_reader

__all__ = [
    "Reader",
    "LoadRecordd",
    "split_datalist",
    "get_reader",
    "detect_format",
    "FORMATS",
    "READERS",
    "MoNuSegReader",
    "PngInstanceReader",
    "LiveCellReader",
    "A431Reader",
    "EMReader",
    "CVPPPReader",
    "FolderReader",
    "Volume",
    "read_points",
    "parse_aperio_xml",
    "rasterize_polygons",
    "encode_coin_mask",
    "decode_coin_mask",
    "cvppp_palette",
]


def __getattr__(name: str) -> Any:
    """``LoadRecordd`` is imported on first use (it pulls in MONAI's transforms, which take seconds)."""
    if name == "LoadRecordd":
        from .transforms import LoadRecordd

        return LoadRecordd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
