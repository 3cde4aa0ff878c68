# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Format names, :func:`get_reader` and :func:`detect_format`."""

from __future__ import annotations

import os
from typing import Any

from ...errors import DataError
from .a431 import A431Reader
from .base import FolderScan, Reader
from .cvppp import CVPPPReader
from .em import EMReader
from .folder import FolderReader
from .livecell import LiveCellReader
from .monuseg import MoNuSegReader
from .png_instance import PngInstanceReader

__all__ = ["READERS", "FORMATS", "get_reader", "detect_format"]

READERS: dict[str, type[Reader]] = {
    "monuseg": MoNuSegReader,
    "png_instance": PngInstanceReader,
    "livecell": LiveCellReader,
    "a431": A431Reader,
    "em": EMReader,
    "cvppp": CVPPPReader,
    "folder": FolderReader,
}
FORMATS = tuple(READERS)
_ALIASES = {"tnbc": "png_instance", "coin": "png_instance", "lucchi": "em", "epfl": "em", "vnc": "em",
            "mitoem": "em", "plain": "folder"}


def get_reader(format: str | None, root: str | os.PathLike, **kw: Any) -> Reader:
    """Build the reader of ``format`` (one of :data:`FORMATS`; aliases ``tnbc``/``coin``/``lucchi``/``vnc``/
    ``mitoem``; ``None`` or ``"auto"`` detects it) on ``root`` with reader options ``kw``."""
    if format is None or format == "auto":
        format = detect_format(root)
    name = _ALIASES.get(str(format).lower(), str(format).lower())
    if name not in READERS:
        raise DataError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}", root)
    return READERS[name](root, **kw)


def detect_format(root: str | os.PathLike) -> str:
    """Guess a folder's format from its files (names and, for tif stacks, headers).

    Raises:
        DataError: the folder does not exist, matches no format, or matches several (the message lists them; pass
            the format explicitly then).
    """
    if not os.path.isdir(root):
        raise DataError("dataset folder does not exist", root)
    scan = FolderScan(root)
    if not scan.files:
        raise DataError("dataset folder is empty", root)
    hits = [name for name, cls in READERS.items() if cls.matches(scan)]
    if len(hits) > 1 and "em" in hits:  # other formats' tifs can look like stacks; prefer the specific format
        hits.remove("em")
    if not hits:
        raise DataError(f"cannot tell the dataset format from the files; pass one of {', '.join(FORMATS)}", root)
    if len(hits) > 1:
        raise DataError(f"ambiguous dataset format: the folder looks like {' and '.join(hits)}; pass format=...",
                        root)
    return hits[0]
