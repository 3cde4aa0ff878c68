# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""monai_ext.networks."""

from __future__ import annotations

from monai_ext.utils import lazy_exports

__all__: list[str] = []


# -- lazy re-exports: every public name of the submodules, imported on first use (keeps `import monai_ext`
# light and free of import cycles between subpackages).
_LAZY: dict[str, tuple[str, ...]] = {  # submodule: its public names
    "blocks": (
        "PixelShuffleDeconv2d", "fast_deconvs", "is_shuffle_equivalent", "FastInstanceNorm2d", "FastMaxPool2d",
        "fast_inference_layers", "is_fast_instance_norm_equivalent", "is_fast_pool_equivalent", "ChunkedConvNeXtBlock",
        "fast_convnext_blocks", "CONVNEXT_CHUNK_BYTES",
    ),
    "coin": ("COINUNet", "COINDeepLabV3Plus", "split_outputs"),
    "collaborator": ("ForegroundUNet", "BorderCNN", "Collaborator"),
    "embedding": ("EmbeddingUNet", "EMATeacher", "DEFAULT_FEATURES", "PAPER_FEATURES"),
    "lacss": (
        "ConvNeXtEncoder", "FPN", "LocationHead", "SegmentationHead", "LacssNet", "LacssInference", "LacssPredictor",
        "as_predictor",
    ),
    "multitask": ("MultiTaskUNet", "NUM_OUTPUTS"),
}
__all__ = [*__all__, *(n for names in _LAZY.values() for n in names)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
