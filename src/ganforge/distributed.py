"""Data-parallel training across processes with torch.distributed (gloo on CPU, NCCL on CUDA).

Launch with `torchrun --nproc_per_node N -m ganforge train ...`. Every rank draws the same global batch
of data indices and noise and trains on its own slice; DistributedDataParallel averages the gradients,
so N processes at global batch B follow the same trajectory as one process at batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes in the environment (no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return info()
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    global _joined_from_env
    _joined_from_env = True
    return info()


_joined_from_env = False


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def joined_from_env() -> bool:
    """True in a process that init_from_env put into a torchrun group."""
    return _joined_from_env


def launch_command() -> str:
    """How to start ganforge again the way this process was started: `ganforge`, or the torchrun launch
    (per node) of a multi-process run."""
    if not info().enabled:
        return "ganforge"
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))  # torchrun: the number of nodes
    per_node = os.environ.get("LOCAL_WORLD_SIZE", str(info().world_size))
    if nodes > 1:
        return f"torchrun --nnodes {nodes} --nproc_per_node {per_node} ... -m ganforge"
    return f"torchrun --nproc_per_node {per_node} -m ganforge"


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if info().enabled:
        dist.all_reduce(t)
        t /= info().world_size
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank says True (a collective, so all ranks stop together)."""
    return any_ranks((flag,), device)[0]


def any_ranks(flags: tuple[bool, ...], device: torch.device) -> tuple[bool, ...]:
    """Each flag True on every rank when any rank says so, in one collective."""
    if not info().enabled:
        return flags
    t = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=device)
    dist.all_reduce(t)
    return tuple(bool(v > 0) for v in t.tolist())


def local_batch(global_batch: int, pac: int = 1) -> int:
    """Each process's share of the global batch; refused unless it splits evenly, into shares that are whole
    PacGAN packs of `pac` samples."""
    world = info().world_size
    step = world * pac
    if global_batch % step:
        lower, upper = global_batch // step * step, (global_batch // step + 1) * step
        choices = f"{lower} or {upper}" if lower else str(upper)
        if pac > 1:
            raise UserError(f"train.batch_size {global_batch} must split across {world} processes into shares that "
                            f"are multiples of model.pac={pac} (each trains its share, and D judges packs of {pac}); "
                            f"use --set train.batch_size={choices}")
        raise UserError(f"train.batch_size {global_batch} must divide evenly across {world} processes (each "
                        f"trains its share of the batch); use --set train.batch_size={choices}")
    return global_batch // world


def rank_slice(t: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global-batch tensor."""
    d = info()
    if not d.enabled:
        return t
    b = t.shape[0] // d.world_size
    return t[d.rank * b : (d.rank + 1) * b]


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around a module; the module itself when running alone."""
    if not info().enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # buffers (BN running stats) follow rank 0's at every forward: DDP's default in every torch version, left
    # unnamed because torch 2.14 deprecates the argument's old name and older versions lack the new one
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
