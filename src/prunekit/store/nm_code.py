"""N:M positions stored near their entropy: each group's pattern as a rank, several ranks to a chunk.

A group of M inputs keeps N; which N is one of C = C(M, N) patterns. Storing each kept position in
ceil(log2 M) bits (NVIDIA's 2:4 metadata, prunekit's kernel layout) spends 1 bit per weight on 2:4, where
log2(6) / 4 = 0.646 is the least any code can spend when the six patterns are equally common (they are:
``bench/nm_position_entropy.py``). Here a group's ascending positions p_0 < … < p_{N-1} become their
colexicographic rank Σ_i C(p_i, i + 1) in [0, C), and k consecutive groups (row-major) one chunk, the
mixed-radix number Σ_j rank_j · C^j, packed in ceil(k · log2 C) bits (``bits.pack_bits``). k is the one
of 1..12 that spends the fewest bits per group: 2:4 packs 5 groups in 13 bits (0.65 bits per weight),
4:8 packs 7 in 43 (0.77 against 1.5). The last chunk is padded with rank 0.
"""

from __future__ import annotations

import math

import torch

from .bits import pack_bits, unpack_bits

MAX_CHUNK_BITS = 62  # a chunk is summed in int64 (``bits.unpack_bits``)


def chunking(n: int, m: int) -> tuple[int, int] | None:
    """(groups per chunk, bits per chunk) for N:M, or None when one rank does not fit a chunk."""
    count = math.comb(m, n)
    options = [(k, max(1, (count**k - 1).bit_length())) for k in range(1, 13)]
    options = [(k, b) for k, b in options if b <= MAX_CHUNK_BITS]
    return min(options, key=lambda o: (o[1] / o[0], o[0])) if options else None


def code_bits(n: int, m: int, groups: int) -> int | None:
    """Bits that the ranks of ``groups`` groups take (None when N:M has no chunking)."""
    chunk = chunking(n, m)
    return None if chunk is None else -(-groups // chunk[0]) * chunk[1]


def _binomials(n: int, m: int) -> torch.Tensor:
    """(n, m) int64: entry [i, c] = C(c, i + 1), capped at 2^62 (a valid rank never reaches a capped entry:
    p_i ≤ M − N + i, so C(p_i, i + 1) ≤ C(M, N))."""
    return torch.tensor([[min(math.comb(c, i + 1), 1 << 62) for c in range(m)] for i in range(n)], dtype=torch.int64)


def encode_positions(positions: torch.Tensor, m: int) -> torch.Tensor:
    """(..., n) ascending positions in [0, m) → the packed chunks of their ranks (uint8)."""
    n = positions.shape[-1]
    k, bits = chunking(n, m)
    pos = positions.reshape(-1, n).long()  # (groups, n)
    ranks = _binomials(n, m).gather(1, pos.t()).sum(0)  # (groups,)
    ranks = torch.cat([ranks, ranks.new_zeros(-ranks.numel() % k)]).view(-1, k)  # (chunks, k)
    chunks = (ranks * math.comb(m, n) ** torch.arange(k, dtype=torch.int64)).sum(1)
    return pack_bits(chunks, bits)


def decode_positions(packed: torch.Tensor, groups: int, n: int, m: int) -> torch.Tensor:
    """``encode_positions`` reversed: (groups, n) ascending positions. ValueError for a wrong byte count, a
    chunk of C^k or more, or padding that is not rank 0 (a changed file)."""
    chunk = chunking(n, m)
    if chunk is None:
        raise ValueError(f"{n}:{m} has no rank code")
    k, bits = chunk
    count = math.comb(m, n)
    values = unpack_bits(packed, -(-groups // k), bits)  # (chunks,)
    digits = []
    for _ in range(k):
        digits.append(values % count)
        values = values // count
    if bool((values != 0).any()):
        raise ValueError(f"a chunk of N:M ranks is {count}^{k} or more")
    ranks = torch.stack(digits, 1).reshape(-1)  # (chunks · k,)
    if bool((ranks[groups:] != 0).any()):
        raise ValueError("the padding after the last N:M rank is not zero")
    ranks = ranks[:groups].clone()
    table = _binomials(n, m)
    positions = torch.empty(groups, n, dtype=torch.int64)
    for i in reversed(range(n)):  # the largest c with C(c, i + 1) ≤ the rank left
        c = torch.searchsorted(table[i], ranks, right=True) - 1
        positions[:, i] = c
        ranks -= table[i][c]
    return positions
