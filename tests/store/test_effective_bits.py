import pytest
import torch

from prunekit.quant.grid import LayerGrid
from prunekit.store.effective_bits import layer_bits, model_bits


def _grid(rows, groups, bits=4, groupsize=128, sym=False):
    return LayerGrid(bits, groupsize, sym, torch.ones(rows, groups, dtype=torch.float16),
                     torch.zeros(rows, groups, dtype=torch.uint8))


def test_two_four_with_int4_g128_counts_every_part():
    # 2:4 (half kept) in N:M storage: 4-bit values; 4096 groups' pattern ranks, five to 13 bits (820 chunks);
    # per row and 128 inputs a float16 scale and a 4-bit zero point: (32768 + 10660 + 2560) / 16384 bits per weight
    bits = layer_bits((64, 256), 64 * 128, 32, _grid(64, 2), nm=(2, 4))
    assert bits["storage"] == "nm" and bits["bits_per_weight"] == pytest.approx(45988 / 16384)  # 2.807
    assert bits["grid_bits"] == 64 * 2 * 20 and bits["metadata_bits"] == 820 * 13


def test_dense_int8_per_channel_and_symmetric_grids():
    bits = layer_bits((10, 100), 1000, 32, _grid(10, 1, bits=8, groupsize=0, sym=True))
    assert bits["storage"] == "dense" and bits["bits_per_weight"] == pytest.approx(8 + 16 / 100)


def test_unstructured_picks_the_cheaper_of_dense_and_bitmask():
    assert layer_bits((4, 8), 8, 32)["storage"] == "bitmask"   # 75% zeros in float32: 8·32 + 32 < 32·32
    assert layer_bits((4, 8), 30, 4, None)["storage"] == "dense"  # few zeros at 4 bits: a bitmask costs more
    assert layer_bits((4, 8), 30, 4)["bits_per_weight"] == 4.0


def test_model_total_weights_each_layer_by_its_size():
    a, b = layer_bits((2, 8), 16, 16), layer_bits((2, 24), 48, 4)
    total = model_bits({"a": a, "b": b}, {"a": 16, "b": 48})
    assert total["bits_per_weight"] == pytest.approx((16 * 16 + 48 * 4) / 64) and total["bytes"] == (256 + 192) // 8
