# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""torchrun helpers shared by every bundle's multi_gpu_train.json: NCCL on GPUs, gloo on CPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "local_device", "ddp_wrap", "is_rank0", "cleanup_distributed"]


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> None:
    """Initialise the default process group from torchrun's environment (idempotent).

    Args:
        backend: ``None`` picks ``nccl`` with CUDA and ``gloo`` without.
    """
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        raise RuntimeError("multi_gpu_train.json must be launched with torchrun (RANK/WORLD_SIZE are not set)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend)


def ddp_wrap(network: torch.nn.Module, device: torch.device | str | None = None, **kwargs) -> torch.nn.Module:
    """Wrap in ``DistributedDataParallel``; ``device_ids`` only for CUDA (it must be ``None`` on CPU)."""
    device = torch.device(device) if device is not None else local_device()
    network = network.to(device)
    if device.type == "cuda":
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[device], **kwargs)
    return torch.nn.parallel.DistributedDataParallel(network, **kwargs)


def is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
