"""Running sparse: the compiled CPU kernel and its packed weights, ``SparseLinear``, the measured per-layer swap, GPU 2:4."""
