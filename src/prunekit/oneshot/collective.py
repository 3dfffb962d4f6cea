"""Data-parallel calibration: each process runs its share of the calibration windows through a block, the
statistics are summed over processes, and each layer is solved by one process and broadcast to the rest.

``Single`` is the one-process case (every call a no-op). ``TorchDistributed`` uses ``torch.distributed``
(gloo on CPU, NCCL on GPU), set up by ``torchrun`` or ``prunekit prune --workers K``. Every process runs
the same blocks and layers in the same order, so the collectives line up without any scheduling.
"""

from __future__ import annotations

import datetime
import os

import torch

from ..errors import PrunekitError
from .stats import InputStats


class Single:
    rank, world = 0, 1

    def reduce_stats(self, stats: InputStats) -> None:
        """Sum ``stats`` (Σx² or XᵀX, and the token count) over every process, in place, once: it must be
        complete (no ``add`` after this)."""

    def owner(self, index: int) -> int:
        """The process that solves the ``index``-th targeted layer (layers dealt round-robin)."""
        return index % self.world

    def share(self, tensor: torch.Tensor, owner: int) -> None:
        """Overwrite ``tensor`` everywhere with ``owner``'s copy."""

    def share_object(self, obj, owner: int):
        return obj

    def agree(self, ok: bool) -> bool:
        """True when every process says ``ok`` (so one failing process stops them all, not a hang)."""
        return ok

    def total(self, n: int) -> int:
        """``n`` summed over processes."""
        return n

    def split(self, calibration: torch.Tensor) -> torch.Tensor:
        """This process's share of the calibration windows (nsamples, seqlen): a contiguous run of them."""
        return calibration

    def mean_grads(self, params: list[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over the processes (data-parallel training)."""

    def bytes_sent(self) -> int:
        return 0


class TorchDistributed(Single):
    """One process of a ``torch.distributed`` group (already initialised by ``init_from_env``)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._sent = 0  # bytes this process contributed to collectives (for the communication figure)

    def reduce_stats(self, stats: InputStats) -> None:
        if stats.reduced:  # shared by several layers (q/k/v), already summed
            return
        stats.reduced = True
        sums = stats.xtx if stats.xtx is not None else stats.sq_sum
        count = torch.tensor([stats.count], dtype=torch.float64, device=sums.device)
        self.dist.all_reduce(sums)
        self.dist.all_reduce(count)
        stats.count = int(count.item())
        self._sent += sums.nbytes + count.nbytes

    def share(self, tensor: torch.Tensor, owner: int) -> None:
        if tensor.is_contiguous():
            self.dist.broadcast(tensor, src=owner)
        else:  # a transposed view (Conv1D): broadcast a contiguous copy, write it back
            buf = tensor.contiguous()
            self.dist.broadcast(buf, src=owner)
            tensor.copy_(buf)
        self._sent += tensor.nbytes if self.rank == owner else 0

    def share_object(self, obj, owner: int):
        box = [obj]
        self.dist.broadcast_object_list(box, src=owner)
        return box[0]

    def agree(self, ok: bool) -> bool:
        flag = torch.tensor([1 if ok else 0])
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MIN)
        return bool(flag.item())

    def total(self, n: int) -> int:
        value = torch.tensor([n], dtype=torch.int64)
        self.dist.all_reduce(value)
        return int(value.item())

    def split(self, calibration: torch.Tensor) -> torch.Tensor:
        if calibration.shape[0] < self.world:
            raise PrunekitError(f"{calibration.shape[0]} calibration windows cannot be shared by {self.world} processes")
        return calibration.tensor_split(self.world)[self.rank]

    def mean_grads(self, params: list[torch.Tensor]) -> None:
        for p in params:
            if p.grad is not None:
                self.dist.all_reduce(p.grad)
                p.grad /= self.world
                self._sent += p.grad.nbytes

    def bytes_sent(self) -> int:
        return self._sent


def init_from_env(device: torch.device) -> Single:
    """``TorchDistributed`` when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else ``Single``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Single()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    if device.type == "cuda" and device.index is None:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return TorchDistributed()
