# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Exceptions with messages a user can act on: which file, what is wrong."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data: names the offending file (if any) and the problem.

    Args:
        problem: what is wrong, in words a user understands.
        path: the file or folder concerned, if any.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class TrainingError(RuntimeError):
    """Training cannot continue safely (e.g. a non-finite loss); the last checkpoint is intact."""
