"""Test-only Ignite handler: every rank saves its network weights on completion (DDP consistency check)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from ignite.engine import Events


class RankDump:
    def __init__(self, network: torch.nn.Module, out_dir: str) -> None:
        self.network = network
        self.out_dir = Path(out_dir)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        net = getattr(self.network, "module", self.network)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, self.out_dir / f"rank{rank}.pt")
