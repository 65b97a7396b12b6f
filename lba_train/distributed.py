"""Fine-tuning under ``torchrun``: which rank this process is, its shard of the training data, and the few
collective steps :func:`lba_train.train.finetune` needs (DistributedDataParallel, one bias choice for all).

A run is distributed when ``torch.distributed`` is initialised, or when torchrun's ``WORLD_SIZE`` says so (the
process group is then initialised here: gloo on CPU, NCCL on CUDA). Each rank trains on its own
:class:`~torch.utils.data.DistributedSampler` shard with the loader's batch size (the effective batch is
``world_size`` times larger); evaluation runs the whole validation set on every rank, so each rank's
accuracies are the same and rank 0's are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the run: ``rank`` of ``world_size`` (0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Only rank 0 writes checkpoints and reports."""
        return self.rank == 0


def current_ranks(device: str) -> Ranks:
    """This process's :class:`Ranks`, initialising the process group from torchrun's environment if needed."""
    if not dist.is_available():
        return Ranks()
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Ranks()
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def rank_device(device: str) -> str:
    """``cuda`` means this rank's own GPU (torchrun's ``LOCAL_RANK``); any other device is kept."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def shard_loader(loader: DataLoader, ranks: Ranks, seed: int) -> DataLoader:
    """``loader`` restricted to this rank's shard (shuffled with ``seed`` if ``loader`` shuffles)."""
    sampler = DistributedSampler(loader.dataset, num_replicas=ranks.world_size, rank=ranks.rank,
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, drop_last=loader.drop_last)


def wrap_for_training(model: nn.Module, ranks: Ranks) -> nn.Module:
    """``model`` as DDP (gradients averaged across ranks; rank 0's weights broadcast first), or itself."""
    if not ranks.distributed:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def mean_over_ranks(value: float, ranks: Ranks, device: str) -> float:
    """The mean of ``value`` over all ranks (each rank's shard has the same number of samples)."""
    if not ranks.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / ranks.world_size


def from_rank0(obj, ranks: Ranks):
    """Rank 0's ``obj`` on every rank (other ranks' ``obj`` is ignored)."""
    if not ranks.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
