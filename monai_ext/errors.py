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


class StorageError(OSError):
    """An output file cannot be written (disk full, file size limit, read-only folder).

    Raised instead of a bare ``OSError`` where the user needs to know what survived: the message names the
    file, the system's reason, and that the earlier file (if any) is intact, because every save goes
    through a temporary file and a rename.

    Args:
        problem: what could not be written and what is still intact.
        path: the file concerned.
        errno: the system error number, if known.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None, errno: int | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
        self.errno = errno
