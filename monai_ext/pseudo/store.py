# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""On-disk pseudo-labels, one folder per self-training round, so a crash never redoes a finished round."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.errors import DataError
from monai_ext.utils import atomic_write_bytes

__all__ = ["PseudoLabelStore"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PseudoLabelStore:
    """Pseudo-labels of every round under ``root``.

    Layout: ``root/round_XX/<sample id>.npz`` (one compressed archive of named arrays per sample),
    ``root/round_XX/stats.json`` and a ``DONE`` marker written last, and ``root/CURRENT`` naming the
    round the training data reads. All files are written atomically. Readers look ``CURRENT`` up on
    each load, so data-loader worker processes see a new round without being rebuilt.

    Args:
        root: folder of the store (created if missing).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------
    def round_dir(self, rnd: int) -> Path:
        return self.root / f"round_{int(rnd):02d}"

    @staticmethod
    def _fname(sample_id: str) -> str:
        return _SAFE.sub("_", str(sample_id)) + ".npz"

    # -- writing -------------------------------------------------------------------------------
    def write(self, rnd: int, sample_id: str, **arrays: np.ndarray) -> Path:
        """Store the arrays of one sample for round ``rnd``."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return atomic_write_bytes(self.round_dir(rnd) / self._fname(sample_id), buf.getvalue())

    def finish(self, rnd: int, stats: dict[str, Any] | None = None) -> None:
        """Mark round ``rnd`` complete (stats + ``DONE``) and make it the current round."""
        rdir = self.round_dir(rnd)
        rdir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(rdir / "stats.json", json.dumps(_jsonable(stats or {}), indent=2).encode())
        atomic_write_bytes(rdir / "DONE", b"done\n")
        self.set_current(rnd)

    def set_current(self, rnd: int) -> None:
        if not self.is_done(rnd):
            raise DataError(f"round {rnd} is not complete", self.round_dir(rnd))
        atomic_write_bytes(self.root / "CURRENT", f"{int(rnd)}\n".encode())

    # -- reading -------------------------------------------------------------------------------
    def is_done(self, rnd: int) -> bool:
        return (self.round_dir(rnd) / "DONE").exists()

    def rounds_done(self) -> list[int]:
        if not self.root.exists():
            return []
        found = []
        for d in self.root.glob("round_*"):
            if (d / "DONE").exists():
                found.append(int(d.name.split("_")[1]))
        return sorted(found)

    def current(self) -> int | None:
        path = self.root / "CURRENT"
        if not path.exists():
            return None
        return int(path.read_text().strip())

    def stats(self, rnd: int) -> dict[str, Any]:
        path = self.round_dir(rnd) / "stats.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def has(self, sample_id: str, rnd: int | None = None) -> bool:
        rnd = self.current() if rnd is None else rnd
        return rnd is not None and (self.round_dir(rnd) / self._fname(sample_id)).exists()

    def load(self, sample_id: str, rnd: int | None = None) -> dict[str, np.ndarray]:
        """Arrays stored for ``sample_id`` in round ``rnd`` (default: the current round)."""
        rnd = self.current() if rnd is None else rnd
        if rnd is None:
            raise DataError("no pseudo-label round is complete yet", self.root)
        path = self.round_dir(rnd) / self._fname(sample_id)
        if not path.exists():
            raise DataError(f"no pseudo-label for sample {sample_id!r} in round {rnd}", path)
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable pseudo-label file ({exc})", path) from exc


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
