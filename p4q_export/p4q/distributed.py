"""torchrun support: detect the env vars torchrun sets, shard batches, all-reduce gradients.

Every rank holds the same frozen model and the same cached features (they are deterministic), so
sharding a global batch and summing per-sample losses across ranks reproduces one process exactly
up to float summation order. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, batch_indices: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (strided, so shards differ by at most one item)."""
        return batch_indices[self.rank :: self.world_size] if self.enabled else batch_indices

    def all_reduce_grads(self, params) -> None:
        """Sum gradients over ranks (each rank's loss is already divided by the global batch)."""
        if not self.enabled:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.detach().clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init_distributed() -> DistContext:
    """A DistContext for this process: a process group when torchrun started us, else a single rank."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
