# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Read the current round's pseudo-labels into a sample dict."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.transforms import MapTransform, ThreadUnsafe

from monai_ext.pseudo.store import PseudoLabelStore

__all__ = ["LoadPseudoLabeld", "LoadPseudoLabelD", "LoadPseudoLabelDict"]


class LoadPseudoLabeld(MapTransform, ThreadUnsafe):
    """Add the arrays of the store's current round for ``d[id_key]`` (``meta.id`` by default).

    ``ThreadUnsafe`` stops ``CacheDataset`` from caching past this transform: the labels change
    between rounds.

    Args:
        store: the pseudo-label store.
        keys: names of the stored arrays to add (missing names raise).
        id_key: how to find the sample id: ``"meta.id"`` reads ``d["meta"]["id"]``.
        add_channel: prepend a channel axis to each array (labels are stored without one).
    """

    backend = ["numpy"]

    def __init__(
        self,
        store: PseudoLabelStore,
        keys: str | list[str] = "pseudo_label",
        id_key: str = "meta.id",
        add_channel: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys=False)
        self.store = store
        self.id_key = id_key
        self.add_channel = add_channel

    def _sample_id(self, d: Mapping[Hashable, Any]) -> str:
        cur: Any = d
        for part in self.id_key.split("."):
            cur = cur[part]
        return str(cur)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        arrays = self.store.load(self._sample_id(d))
        for key in self.key_iterator(arrays):
            arr = np.asarray(arrays[key])
            d[key] = arr[None] if self.add_channel else arr
        for key in self.keys:
            if key not in d:
                raise KeyError(f"pseudo-label store has no array {key!r} for sample {self._sample_id(d)!r}")
        return d


LoadPseudoLabelD = LoadPseudoLabelDict = LoadPseudoLabeld
