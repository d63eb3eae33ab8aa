"""torchrun / DistributedDataParallel setup and teardown.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each worker's environment; without
them the run is a single process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from hellogpt.errors import UserError
from hellogpt.hardware.devices import choose_device

# How long a collective waits for a late rank, set explicitly (the backends' defaults differ: NCCL 10 minutes,
# gloo 30): long enough for rank 0 to write a large checkpoint while the others wait at the next collective.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
# How long the ranks wait on the host group: for rank 0 to prepare a missing dataset (tokenising billions of tokens
# takes hours on a few cores; prepare a larger one with `hellogpt prepare` before launching), or for the others
# to reach the next micro-batch boundary, where they agree on stopping.
HOST_GROUP_TIMEOUT = timedelta(hours=4)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the run: its rank, the number of ranks and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    # A gloo group beside the training backend's: waits and stop flags on the host, never syncing a device.
    host_group: Optional[Any] = field(default=None, compare=False)

    @property
    def is_main(self) -> bool:
        """Only the main rank logs, saves and displays."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True inside a worker started by torchrun (or any launcher that sets its variables)."""
    return all(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def setup_distributed(device_setting: str) -> DistributedContext:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo on CPU); else a single process."""
    if not launched_by_torchrun():
        return DistributedContext(rank=0, local_rank=0, world_size=1, device=choose_device(device_setting))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = device_setting != "cpu" and torch.cuda.is_available()
    if device_setting.startswith("cuda") and not use_cuda:
        raise UserError(f"system.device is {device_setting} but CUDA is not available: use --set system.device=cpu")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    host_group = dist.new_group(backend="gloo", timeout=HOST_GROUP_TIMEOUT)
    return DistributedContext(
        rank=rank, local_rank=local_rank, world_size=world_size, device=device, host_group=host_group
    )


def teardown_distributed(context: DistributedContext, leave_together: bool) -> None:
    """Leave the process group, so that torchrun sees a clean exit; `leave_together` waits for every rank first
    (after a run that ended normally: a gloo rank that destroys its group while another still holds it aborts)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if leave_together and context.is_distributed:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """`tensor` summed over the ranks (in place); itself in a single process."""
    if context.is_distributed:
        dist.all_reduce(tensor)
    return tensor


def wait_for_main_rank(context: DistributedContext) -> None:
    """The other ranks wait (up to HOST_GROUP_TIMEOUT) while the main rank prepares what they all need."""
    if context.is_distributed:
        dist.barrier(group=context.host_group)


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """True on every rank when `flag` is true on any: one all_reduce (MAX) of one integer on the host group,
    which costs a round trip between the hosts and no device sync."""
    if not context.is_distributed:
        return flag
    combined = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(combined, op=dist.ReduceOp.MAX, group=context.host_group)
    return bool(combined.item())


def broadcast_from_main(value: Any, context: DistributedContext) -> Any:
    """The main rank's `value` on every rank (`value` itself in a single process)."""
    if not context.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_from_ranks(value: Any, context: DistributedContext) -> list[Any]:
    """Every rank's `value`, in rank order (a list of one in a single process)."""
    if not context.is_distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def check_replicas_agree(model: nn.Module, context: DistributedContext, step: int) -> None:
    """DDP keeps the replicas identical; a mismatch is a bug, not a user error, so it is loud."""
    if not context.is_distributed:
        return
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests = gather_from_ranks(digest.hexdigest(), context)
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP replicas differ after step {step}: weight digests {digests}")


def local_accumulation_steps(global_steps: int, world_size: int) -> int:
    """Micro-batches per rank: the configured accumulation is for all ranks together."""
    if global_steps % world_size != 0:
        raise UserError(
            f"train.gradient_accumulation_steps ({global_steps}) must be divisible by the number of processes "
            f"({world_size}): set it to a multiple, e.g. --set train.gradient_accumulation_steps="
            f"{max(world_size, global_steps - global_steps % world_size)}"
        )
    return global_steps // world_size
