"""The few ``torch.distributed`` helpers visionkit needs, in one place.

Every function works without a process group (one process: rank 0 of 1, gather returns the
list, broadcast the object), so callers never branch on "is this DDP?". ``torch.distributed`` is
imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import sys
from typing import Any


def is_initialized() -> bool:
    """Whether a default process group exists (``torch.distributed`` available and initialised)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size(group: Any = None) -> int:
    """Processes in ``group`` (default: all); 1 without a process group."""
    import torch.distributed as dist

    return dist.get_world_size(group) if is_initialized() else 1


def rank() -> int:
    """This process's global rank; 0 without a process group."""
    import torch.distributed as dist

    return dist.get_rank() if is_initialized() else 0


def is_distributed(group: Any = None) -> bool:
    """Whether more than one process takes part (collectives are needed)."""
    return world_size(group) > 1


def gather_objects(items: list[Any]) -> list[Any]:
    """Every rank's list, concatenated in rank order, on every rank (the list itself alone)."""
    if not is_distributed():
        return items
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable object on every rank (``obj`` itself alone)."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(value: Any) -> Any:
    """The mean of a tensor over all ranks (summed by ``all_reduce``, divided by the world size),
    without gradient: a loss normaliser every rank shares (YOLOX / RTMDet average their positive
    count so). The tensor itself alone; every rank must call it."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def broadcast_tensors(tensors: Any, src: int = 0) -> None:
    """Overwrite each tensor in place with rank ``src``'s values (nothing alone)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.broadcast(tensor.data, src=src)


def ddp_wrapper(trainer: Any) -> Any:
    """The trainer's ``DistributedDataParallel`` wrapper of the module, or None (not DDP)."""
    from torch.nn.parallel import DistributedDataParallel

    model = getattr(trainer.strategy, "model", None)
    return model if isinstance(model, DistributedDataParallel) else None


def end_process_group() -> None:
    """Destroy the default process group, if any, before the process exits.

    Lightning leaves a gloo group to interpreter shutdown, where gloo's worker threads can abort
    the process (SIGABRT, "terminate called without an active exception": pytorch#190489), so a
    finished rank sometimes exits -6. Never imports torch itself.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
