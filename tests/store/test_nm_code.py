import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.store.bits import packed_bytes
from prunekit.store.nm_code import chunking, code_bits, decode_positions, encode_positions


def test_two_four_ranks_and_chunks_by_hand():
    # colex ranks C(p0, 1) + C(p1, 2): (0,1)=0, (0,2)=1, (1,2)=2, (0,3)=3, (1,3)=4, (2,3)=5
    six = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]])
    assert chunking(2, 4) == (5, 13)  # 6^5 = 7776 < 2^13: 2.6 bits per group, 0.65 per weight
    # groups (2,3) and (0,2): chunk 5 + 1·6 = 11 in 13 bits, then three padding ranks of 0
    assert encode_positions(torch.tensor([[2, 3], [0, 2]]), 4).tolist() == [11, 0]
    packed = encode_positions(six, 4)  # chunks 0 + 1·6 + 2·36 + 3·216 + 4·1296 = 5910, then 5
    assert int.from_bytes(bytes(packed.tolist()), "little") == 5910 | 5 << 13
    assert torch.equal(decode_positions(packed, 6, 2, 4), six)


def test_chunks_spend_the_fewest_bits_per_group():
    assert chunking(4, 8) == (7, 43)  # 70^7 < 2^43: 0.77 bits per weight where 3-bit positions spend 1.5
    assert chunking(1, 2) == (1, 1)
    for n, m in [(2, 4), (4, 8), (1, 4), (3, 7), (8, 16)]:
        k, bits = chunking(n, m)
        assert math.comb(m, n) ** k <= 2**bits < 2 * math.comb(m, n) ** k  # the chunk is as narrow as it can be
        fits = [math.ceil(j * math.log2(math.comb(m, n))) / j for j in range(1, 13) if j * math.log2(math.comb(m, n)) <= 62]
        assert bits / k <= min(fits) + 1e-12
    assert chunking(35, 70) is None  # C(70, 35) > 2^62: no chunk holds one rank
    wide = torch.tensor([list(range(60)), list(range(4, 64))])  # 60:64: binomials past int64 are never reached
    assert torch.equal(decode_positions(encode_positions(wide, 64), 2, 60, 64), wide)


def _ascending(draw, groups, n, m):
    return torch.tensor([sorted(draw(st.permutations(range(m)))[:n]) for _ in range(groups)], dtype=torch.int64)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), nm=st.sampled_from([(2, 4), (4, 8), (1, 4), (3, 7), (1, 2), (6, 12)]), groups=st.integers(0, 23))
def test_every_pattern_round_trips_in_code_bits(data, nm, groups):
    n, m = nm
    positions = _ascending(data.draw, groups, n, m).reshape(groups, n)
    packed = encode_positions(positions, m)
    assert packed.numel() == packed_bytes(code_bits(n, m, groups))
    assert torch.equal(decode_positions(packed, groups, n, m), positions)


def test_all_patterns_of_four_eight_are_distinct_ranks():
    every = torch.tensor(list(itertools.combinations(range(8), 4)))  # all 70
    assert torch.equal(decode_positions(encode_positions(every, 8), 70, 4, 8), every)


def test_changed_codes_are_refused():
    packed = encode_positions(torch.tensor([[0, 1], [2, 3], [1, 3]]), 4)
    with pytest.raises(ValueError, match="6\\^5 or more"):
        decode_positions(torch.full_like(packed, 255), 3, 2, 4)  # chunk 8191 ≥ 7776
    padded = packed.clone()
    padded[1] |= 0x10  # chunk + 2^12: its fourth and fifth ranks, the padding after three groups, are no longer 0
    with pytest.raises(ValueError, match="padding"):
        decode_positions(padded, 3, 2, 4)
    with pytest.raises(ValueError, match="bytes"):
        decode_positions(packed[:-1], 3, 2, 4)
