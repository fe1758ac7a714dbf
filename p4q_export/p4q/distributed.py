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

    def share(self, n: int) -> slice:
        """This rank's contiguous part of n items (evaluation): equal parts, the last one shorter."""
        if not self.enabled:
            return slice(0, n)
        per = -(-n // self.world_size)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))

    def gather_rows(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's `share(n)` rows, concatenated in rank order (each rank gets all n)."""
        if not self.enabled:
            return rows
        per = -(-n // self.world_size)
        padded = rows.new_zeros((per, *rows.shape[1:]))
        padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        sizes = [len(range(n)[slice(r * per, (r + 1) * per)]) for r in range(self.world_size)]
        return torch.cat([p[:k] for p, k in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init_distributed(device: torch.device | None = None) -> DistContext:
    """A DistContext for this process: a process group when torchrun started us, else a single rank.
    nccl when the ranks compute on GPUs (one each, from LOCAL_RANK: see devices.resolve_device),
    gloo on the CPU."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext()
    if not dist.is_initialized():
        cuda = device is not None and torch.device(device).type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=torch.device(device) if cuda else None)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
