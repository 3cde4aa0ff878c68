# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Validate a bundle without network access (MONAI's ``verify_metadata`` downloads its schema)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_PATH", "REQUIRED_FILES", "verify_metadata_offline", "verify_bundle_layout"]

SCHEMA_PATH = Path(__file__).with_name("meta_schema.json")

REQUIRED_FILES = (
    "LICENSE",
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
)


def verify_metadata_offline(meta_file: str | os.PathLike) -> dict[str, Any]:
    """Validate ``metadata.json`` against the shipped schema and MONAI's conventions.

    Checks the JSON schema, that ``version`` has a ``changelog`` entry, and that the network's first
    input is ``image`` and first output ``pred`` (what MONAI's ``MetaProperties`` and MONAI Label read).

    Returns:
        the parsed metadata.

    Raises:
        ValueError: naming the file and every problem found.
    """
    import jsonschema

    meta_file = Path(meta_file)
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta_file}: not readable JSON ({exc})") from exc
    schema = json.loads(SCHEMA_PATH.read_text())
    problems = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in
                jsonschema.Draft7Validator(schema).iter_errors(meta)]
    if not problems:
        if meta["version"] not in meta["changelog"]:
            problems.append(f"version {meta['version']} has no changelog entry")
        fmt = meta["network_data_format"]
        if next(iter(fmt["inputs"])) != "image":
            problems.append("the first network input must be named 'image'")
        if next(iter(fmt["outputs"])) != "pred":
            problems.append("the first network output must be named 'pred'")
    if problems:
        raise ValueError(f"{meta_file}: invalid bundle metadata:\n  " + "\n  ".join(problems))
    return meta


def verify_bundle_layout(bundle_root: str | os.PathLike) -> list[str]:
    """Return the model-zoo files missing from ``bundle_root`` (empty list when complete)."""
    root = Path(bundle_root)
    return [f for f in REQUIRED_FILES if not (root / f).is_file()]
