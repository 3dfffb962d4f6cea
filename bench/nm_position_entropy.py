"""The fewest bits an N:M + int-b model can take: the entropy of its N:M position patterns, measured on its masks.

Each group of M inputs keeps N weights; which N is one of C(M, N) patterns. Stored with ceil(log2 M) bits per
kept weight (the kernel's N:M layout; NVIDIA's 2:4 metadata), 2:4 costs 1 bit per weight; prunekit's export ranks
each group's pattern (``store/nm_code.py``: 0.65 bits per weight for 2:4). No encoding can go below the entropy of
the patterns a model actually uses (log2 6 / 4 = 0.646 bits per weight for 2:4 if all six are equally common).
Adding the value bits (N/M · b) gives a floor under any packing, before scales and zero points:

    .venv/bin/python bench/nm_position_entropy.py runs/quant-p/24_+_int4_g128_joint [--bits 4] [--nm 2:4]

Prints JSON and a line: patterns seen, their entropy per group and per weight, and the floor in bits per weight.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from prunekit.store.mask_file import load_masks
from prunekit.store.nm_code import code_bits


def pattern_counts(masks: dict[str, torch.Tensor], m: int) -> torch.Tensor:
    """How many groups of ``m`` consecutive inputs (along each row) have each of the 2^m keep patterns."""
    weights = 2 ** torch.arange(m)
    counts = torch.zeros(2**m, dtype=torch.float64)
    for keep in masks.values():
        groups = keep.reshape(-1, m).long()  # (groups, m)
        counts += torch.bincount(groups @ weights, minlength=2**m).double()
    return counts


def entropy_bits(counts: torch.Tensor) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a pruned folder with masks.safetensors")
    ap.add_argument("--nm", default="2:4")
    ap.add_argument("--bits", type=int, default=4, help="value bits of the kept weights")
    args = ap.parse_args()
    n, m = map(int, args.nm.split(":"))
    masks = load_masks(Path(args.folder) / "masks.safetensors")
    if any(k.shape[-1] % m for k in masks.values()):
        raise SystemExit(f"a layer's width is not a multiple of {m}")
    counts = pattern_counts(masks, m)
    per_group = entropy_bits(counts)
    ranks = sum(code_bits(n, m, keep.numel() // m) for keep in masks.values())  # each layer's chunks
    result = {"folder": args.folder, "nm": args.nm, "bits": args.bits, "groups": int(counts.sum()),
              "patterns_seen": int((counts > 0).sum()), "patterns_possible": math.comb(m, n),
              "entropy_bits_per_group": round(per_group, 4), "uniform_bits_per_group": round(math.log2(math.comb(m, n)), 4),
              "position_bits_per_weight": round(per_group / m, 4),
              "kernel_position_bits_per_weight": n * math.ceil(math.log2(m)) / m,
              "export_position_bits_per_weight": round(ranks / (counts.sum().item() * m), 4),
              "floor_bits_per_weight": round(n / m * args.bits + per_group / m, 4)}
    print(json.dumps(result, indent=2))
    print(f"{result['patterns_seen']} of {result['patterns_possible']} patterns; entropy {per_group:.4f} bits per group of "
          f"{m}: {per_group / m:.4f} bits per weight for positions (the export's ranks: "
          f"{result['export_position_bits_per_weight']}), floor {result['floor_bits_per_weight']} bits per weight "
          f"with {args.bits}-bit values (before scales and zero points)")


if __name__ == "__main__":
    main()
