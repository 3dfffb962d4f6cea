"""``SparseLinear``: a drop-in for ``nn.Linear`` whose weight is stored compressed and run by a kernel.

Layouts (the rows of ``layouts.LAYOUTS``): ``bitmask`` and ``sell`` (prunekit's compiled CPU sparse kernel, see
``kernel.py``), ``torch_csr``
(stock ``torch.sparse``), ``gemv`` (the compiled kernel's dense layout: every weight, no mask) and, for a
weight on a quantization grid, ``qdense``, ``qbitmask`` and ``qnm`` (2:4) with int8 or int4 levels
(see ``quant_pack.py``). Batches of up to ``SMALL_BATCH`` rows (decode) run the sparse kernel;
larger ones (prefill) unpack tiles of rows and use dense GEMM, so they cost about what dense does.
Which layout (or plain dense) a layer gets is decided by measuring, in ``swap.py`` (``sparsify``).
"""

from __future__ import annotations

import torch
import torch.nn.modules.module as torch_module  # the global hook registries nn.Module.__call__ checks
from torch import nn

from ..errors import PrunekitError
from ..native import extension
from ..quant.grid import LayerGrid
from .layouts import LAYOUTS, csr_tensor

SMALL_BATCH = 16  # measured crossover: above it the kernel loses to dense GEMM on these CPUs
MODULE_CALL = nn.Module.__call__  # as torch defines it; tracers (torch.fx) patch it for the duration


class SparseLinear(nn.Module):
    """The weight's buffers are checked in full before their first use after any change (a new tensor,
    or an in-place write: its version counter moves), because the kernels trust the indices inside them:
    a loaded pickle or state_dict, or an assigned buffer, never reaches the kernel unchecked."""

    _hooked = True  # False once built; adding any hook (or compile) sets it back: see __call__
    _verified: tuple = ()  # ((buffer, its version), ...) as last checked; see _verify

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, layout: str, grid: LayerGrid | None = None) -> None:
        """``weight`` is (out, in) in the model's dtype; zeros are dropped, everything else kept exactly. The
        quantized layouts take the weight's ``grid`` and store its levels: the weight must lie on it."""
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {tuple(LAYOUTS)}")
        if weight.dim() != 2 or weight.device.type != "cpu":
            raise ValueError("SparseLinear takes a 2-D CPU weight")
        self.out_features, self.in_features = weight.shape
        self.layout, self.dtype = layout, weight.dtype
        weight = weight.detach().contiguous()
        row = LAYOUTS[layout]
        for name, part in zip(row.buffers, row.build(weight, grid), strict=True):  # see kernel.pack, quant_pack.pack
            self.register_buffer(name, part)
        self._entry = row.entry  # the compiled call, looked up here rather than in the table on every call
        if row.entry is not None:
            self._isa = extension.forced_isa()  # read once: a per-call environment lookup costs ~0.5 µs
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self._hooked = False
        self._verified = tuple((t, t._version) for t in self._weight_buffers())  # built here: nothing to check

    @classmethod
    def from_linear(cls, linear: nn.Linear, layout: str, grid: LayerGrid | None = None) -> SparseLinear:
        return cls(linear.weight.data, linear.bias.data if linear.bias is not None else None, layout, grid)

    def __call__(self, *args, **kwargs):
        """``nn.Module``'s call, without its test of this module's four hook dicts on every call while
        no hook was ever added here. In a forward pass those dicts are cold: the test cost ~1 µs per call
        (192×576 at 90%, weights rotated past the cache: 7.7 → 6.6 µs). Global hooks and tracing still
        take the full path, and so does a patched ``nn.Module.__call__`` (``torch.fx`` tracing). Hooks
        are seen when added through this module's own methods (``layer.register_forward_hook(...)``),
        not when written into its hook dicts directly."""
        if (self._hooked or nn.Module.__call__ is not MODULE_CALL
                or torch_module._global_forward_pre_hooks or torch_module._global_forward_hooks
                or torch_module._global_backward_pre_hooks or torch_module._global_backward_hooks
                or torch._C._get_tracing_state()):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def _added_hook(self, register, *args, **kwargs):
        self._hooked = True
        return register(self, *args, **kwargs)

    def register_forward_pre_hook(self, *args, **kwargs):
        return self._added_hook(nn.Module.register_forward_pre_hook, *args, **kwargs)

    def register_forward_hook(self, *args, **kwargs):
        return self._added_hook(nn.Module.register_forward_hook, *args, **kwargs)

    def register_full_backward_pre_hook(self, *args, **kwargs):
        return self._added_hook(nn.Module.register_full_backward_pre_hook, *args, **kwargs)

    def register_full_backward_hook(self, *args, **kwargs):
        return self._added_hook(nn.Module.register_full_backward_hook, *args, **kwargs)

    def register_backward_hook(self, *args, **kwargs):
        return self._added_hook(nn.Module.register_backward_hook, *args, **kwargs)

    def compile(self, *args, **kwargs) -> None:
        self._added_hook(nn.Module.compile, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._buffers  # not nn.Module.__getattr__: a small layer's call is a few µs, most of it fixed cost
        entry = self._entry
        if entry is not None:  # one compiled call: the kernel, or tiled dense GEMM for large batches
            packed, seen = b["packed"], self._verified
            if not seen or seen[0][0] is not packed or seen[0][1] != packed._version:
                self._verify()
            return getattr(extension.load(), entry)(x, packed, b["bias"], self._isa, SMALL_BATCH, 0)
        if self._stale():
            self._verify()
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must end in a dimension of {self.in_features} features, got shape {tuple(x.shape)}")
        x2 = x.reshape(-1, self.in_features)  # (batch, in); stock torch: sparse kernel at every batch size
        y = torch.sparse.mm(self._csr(), x2.float().t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse: bool = True):
        """``model.half()`` / ``.to(dtype)`` leave the layer's dtypes as they are: the weight stays packed
        in its own dtype and the bias in float32 (the kernel computes in float32 and writes y in x's
        dtype); other conversions (``share_memory``) apply. A move off the CPU is refused before this
        layer changes (modules that ``model.to`` reached earlier have moved): it runs on CPU only."""
        converted = {k: fn(t) for k, t in self._buffers.items() if t is not None}
        if any(t.device.type != "cpu" for t in converted.values()):
            raise RuntimeError("SparseLinear runs on CPU only: it cannot move to another device")
        for k, t in converted.items():
            if t.dtype == self._buffers[k].dtype:
                self._buffers[k] = t
        return self

    def _csr(self) -> torch.Tensor:
        """The (out, in) torch CSR tensor over the buffers (~2 µs to build; checked before first use)."""
        return csr_tensor(self._weight_buffers(), (self.out_features, self.in_features))

    def _weight_buffers(self) -> tuple[torch.Tensor, ...]:
        return tuple(self._buffers[n] for n in LAYOUTS[self.layout].buffers)

    def _check(self, parts: tuple[torch.Tensor, ...], prefix: str = "") -> None:
        """Raise PrunekitError unless ``parts`` (as ``_weight_buffers``) are a valid weight of this layer:
        every index in range (the packed checksum too) and the layer's layout, shape and dtype."""
        shape = (self.out_features, self.in_features)
        row = LAYOUTS[self.layout]
        try:
            held = row.check(parts, shape)
        except ValueError as e:
            raise PrunekitError(f"{prefix}{'/'.join(row.buffers)}: {e}") from e
        expected = (self.layout, shape, None if row.quantized else self.dtype)
        if held is not None and held != expected:
            raise PrunekitError(f"{prefix}{'/'.join(row.buffers)} holds a {' '.join(map(str, held))} weight; this "
                                f"layer is {' '.join(map(str, expected))}")

    def _stale(self) -> bool:
        parts, seen = self._weight_buffers(), self._verified
        return len(seen) != len(parts) or any(s is not t or v != t._version for (s, v), t in zip(seen, parts, strict=True))

    def _verify(self) -> None:
        """Check the weight's buffers as they are now, and remember which tensors, at which version, passed."""
        parts = self._weight_buffers()
        self._check(parts)
        self._verified = tuple((t, t._version) for t in parts)

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        self._verified = ()  # an unpickled (possibly edited) weight is checked before its first use
        self._entry = LAYOUTS[self.layout].entry  # a layer pickled before the entry was cached here

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A loaded weight is checked in full before anything is copied (and the layer keeps its own on
        failure): the kernels trust the indices inside it, and it must describe this layer."""
        names = LAYOUTS[self.layout].buffers
        if all(prefix + n in state_dict for n in names):
            self._check(tuple(state_dict[prefix + n] for n in names), prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) weight back, exactly, in its original dtype."""
        return LAYOUTS[self.layout].dense(self._weight_buffers(), (self.out_features, self.in_features)).to(self.dtype)

    def weight_bytes(self) -> int:
        """Bytes held for the weight (values + indices, and the packed header; bias excluded)."""
        return sum(t.numel() * t.element_size() for k, t in self._buffers.items() if k != "bias" and t is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout}"
