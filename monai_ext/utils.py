# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Small helpers shared by every bundle: device choice, seeding, atomic saving, RNG state."""

from __future__ import annotations

import io
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "progress",
    "lazy_exports",
    "get_device",
    "set_seed",
    "atomic_save",
    "atomic_write_bytes",
    "get_rng_state",
    "set_rng_state",
    "to_numpy",
]


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` if given, else ``cuda`` when available, else ``cpu``.

    ``"auto"`` is treated like ``None`` so configs can say ``"device": "auto"``.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_seed(seed: int | None, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). ``None`` leaves the RNGs alone."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def get_rng_state() -> dict[str, Any]:
    """Snapshot every RNG that training touches (python, numpy, torch CPU and CUDA).

    The snapshot holds only tensors, lists and numbers, so it loads with ``torch.load(weights_only=True)``.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a snapshot made by :func:`get_rng_state`."""
    if "python" in state:
        version, py_state, gauss = state["python"]
        random.setstate((version, tuple(int(v) for v in py_state), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        keys = np.asarray(keys.numpy() if isinstance(keys, torch.Tensor) else keys, dtype=np.uint32)
        np.random.set_state((name, keys, int(pos), int(has_gauss), float(gauss)))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]]
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    A crash or a full disk leaves the previous file untouched; the error names the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}") from exc
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file + rename): never a half-written checkpoint.

    The object is serialised in memory first, so a serialisation error stays what it is, and a write failure
    (full disk, file size limit) is always an ``OSError`` naming ``path`` rather than an opaque torch error.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer())


def to_numpy(x: Any) -> np.ndarray:
    """Tensor / MetaTensor / array-like -> numpy array (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def progress(iterable: Any, desc: str, total: int | None = None, unit: str = "image") -> Any:
    """``iterable`` with a tqdm progress bar for long CPU work outside Ignite (seeds, features, scoring,
    tiles, evaluation).

    The bar is drawn on stderr by the first process only, and only when stderr is a terminal (tqdm's
    ``disable=None``), so logs and captured output stay clean; ``WEAKLABEL_PROGRESS=0`` turns it off.
    """
    from tqdm.auto import tqdm

    rank0 = os.environ.get("RANK", "0") == "0"
    off = os.environ.get("WEAKLABEL_PROGRESS", "1") == "0" or not rank0
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=True if off else None, leave=False)


def lazy_exports(package: str, lazy: Mapping[str, Sequence[str]], names: list[str]) -> tuple[Any, Any]:
    """Module ``__getattr__`` / ``__dir__`` (PEP 562) re-exporting the names ``lazy[sub]`` of ``<package>.<sub>``
    on first use: subpackages list every public name without importing every submodule (and its heavy
    dependencies) up front, and without import cycles between subpackages."""
    import importlib
    import sys

    owner = {name: sub for sub, subnames in lazy.items() for name in reversed(subnames)}

    def __getattr__(name: str) -> Any:
        if name in owner:
            value = getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
