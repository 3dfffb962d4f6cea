"""``GemvLinear``: an ``nn.Linear`` whose forward runs prunekit's compiled dense GEMV on the layer's own weight.

The ``gemv`` layout of ``SparseLinear`` packs a copy of the weight; this one reads the weight tensor where it
lies, so an output head tied to its input embedding stays one tensor (no extra memory) and the module stays
an ``nn.Linear`` (same parameters, same state dict, ``model.to`` and weight tying work as before). Where the
kernel does not apply (another device or dtype, inputs of another dtype, a pass that needs gradients) it is
plain ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..native import extension
from .sparse_linear import SMALL_BATCH

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class GemvLinear(nn.Linear):
    @classmethod
    def from_linear(cls, linear: nn.Linear) -> GemvLinear:
        """A ``GemvLinear`` over ``linear``'s very parameters (nothing copied)."""
        layer = nn.utils.skip_init(cls, linear.in_features, linear.out_features, bias=False, device="meta")
        layer.weight, layer.bias = linear.weight, linear.bias
        layer._isa = extension.forced_isa()
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if (w.device.type != "cpu" or x.device.type != "cpu" or w.dtype not in KERNEL_DTYPES or x.dtype != w.dtype
                or not w.is_contiguous() or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad))):
            return super().forward(x)
        bias = None if b is None else b.float()  # the kernel adds a float32 bias
        return extension.load().dense_forward(x, w, bias, getattr(self, "_isa", -1), SMALL_BATCH)
