# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""``LoadRecordd``: the MONAI transform that turns a reader record into a loaded sample.

Kept apart from the readers so that ``import monai_ext.data`` does not import MONAI's transform stack.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.transforms import MapTransform

from .base import Reader

__all__ = ["LoadRecordd"]


class LoadRecordd(MapTransform):
    """Load a reader record into a sample: ``Compose([LoadRecordd(reader), ...])`` over ``reader.datalist()``.

    The whole record is replaced by ``reader.load(record)`` (``image``, ``label``/``points``, ``meta``), so it takes
    no keys. Without a ``reader``, one is built (and cached) from the record's ``format`` and ``root`` with default
    options.
    """

    def __init__(self, reader: Reader | None = None, keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys=keys, allow_missing_keys=True)
        self.reader = reader
        self._readers: dict[tuple[str, str], Reader] = {}

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        reader = self.reader
        if reader is None:
            from .registry import get_reader

            key = (str(data["format"]), str(data["root"]))
            if key not in self._readers:
                self._readers[key] = get_reader(key[0], key[1])
            reader = self._readers[key]
        return reader.load(data)
