"""Where each block's weights live between uses, and where the block runs while it is calibrated and pruned.

``prune()`` brackets every use of a block with ``load`` and ``release``. ``InMemory`` keeps the model
where it is (optionally running each block on another device, one at a time, as the original SparseGPT
code does on a GPU). ``DiskOffload`` reads each block from the checkpoint, and after pruning writes it to
the output's shards and frees it: only the non-block weights and one block are ever resident.
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from ..store.shards import CheckpointReader, ShardWriter


class InMemory:
    """Blocks stay in memory; with ``device``, each one runs there and moves back when released."""

    streams = False  # the weights were resident (and checked) before pruning started
    spill = None  # the masks stay in memory, as the model does

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self._home: dict[str, torch.device] = {}

    def load(self, name: str, block: nn.Module) -> None:
        here = next(block.parameters()).device
        if self.device is not None and here != self.device:
            self._home[name] = here
            block.to(self.device)

    def release(self, name: str, block: nn.Module, final: bool) -> None:
        if name in self._home:
            block.to(self._home.pop(name))


class DiskOffload:
    """Blocks read from ``reader`` (in ``dtype``, onto ``device``) when loaded, and freed (back to the meta
    device) when released; a released pruned block is first written as one shard by ``writer`` (None: by
    another process). The masks are spilled to a temporary file beside the output shards (or in the
    system's temporary folder), so memory holds no more than one block whatever the model's size."""

    streams = True

    def __init__(self, reader: CheckpointReader, writer: ShardWriter | None, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.reader, self.writer, self.dtype, self.device = reader, writer, dtype, torch.device(device)
        self.spill = writer.folder if writer is not None else tempfile.gettempdir()

    def load(self, name: str, block: nn.Module) -> None:
        keys = list(block.state_dict())
        tensors = self.reader.read([f"{name}.{k}" for k in keys], self.dtype, self.device)
        block.load_state_dict({k: tensors[f"{name}.{k}"] for k in keys}, strict=True, assign=True)

    def release(self, name: str, block: nn.Module, final: bool) -> None:
        state = block.state_dict()
        if final and self.writer is not None:
            self.writer.write({f"{name}.{k}": v for k, v in state.items()})
        block.load_state_dict({k: torch.empty_like(v, device="meta") for k, v in state.items()}, assign=True)
