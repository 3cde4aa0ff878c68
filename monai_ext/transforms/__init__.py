# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""MONAI dictionary transforms of the weak-label methods."""

from __future__ import annotations

from .io import SaveInstancesD, SaveInstancesd, SaveInstancesDict, prediction_path, read_prediction, sample_id_of
from .pseudo import LoadPseudoLabelD, LoadPseudoLabeld, LoadPseudoLabelDict

__all__ = [
    "SaveInstancesd",
    "SaveInstancesD",
    "SaveInstancesDict",
    "prediction_path",
    "read_prediction",
    "sample_id_of",
   "LoadPseudoLabeld", "LoadPseudoLabelD", "LoadPseudoLabelDict"]
