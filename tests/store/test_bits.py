"""The two bit layouts a mask takes (flat on disk, row-aligned words in the kernel) and that a mask
survives every conversion between them."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from prunekit.errors import PrunekitError
from prunekit.run import kernel
from prunekit.store.bits import pack_bits, unpack_bits
from prunekit.store.container import save_tensors
from prunekit.store.formats import decode, encode
from prunekit.store.mask_file import load_masks, save_masks


def test_little_bit_order_by_hand():
    mask = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=torch.bool)  # entries 0 and 9
    assert pack_bits(mask).tolist() == [0x01, 0x02]
    # 2-bit values 3, 1, 2: bits 0-1 = 0b11, bits 2-3 = 0b01, bits 4-5 = 0b10 -> 0b00100111
    assert pack_bits(torch.tensor([3, 1, 2]), 2).tolist() == [0x27]
    assert unpack_bits(torch.tensor([0x27], dtype=torch.uint8), 3, 2).tolist() == [3, 1, 2]


def test_wrong_byte_count_is_refused():
    with pytest.raises(ValueError, match="expected 2 packed bytes"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 10)


def test_a_mask_survives_every_conversion(tmp_path):
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(5, 37, generator=g) > 0.4  # 37 columns: a partial kernel word and a partial byte
    save_masks({"layer": keep}, tmp_path / "m.safetensors")
    from_file = load_masks(tmp_path / "m.safetensors")["layer"]
    w = torch.randn(5, 37, generator=g) * from_file  # zeros exactly where the mask prunes
    assert torch.equal(w != 0, keep)
    exported = decode(encode(w, "bitmask"), "bitmask", (5, 37), w.dtype)
    assert torch.equal(exported != 0, keep)
    for layout in kernel.KINDS:
        assert torch.equal(kernel.unpack(kernel.pack(exported, layout)) != 0, keep)


def test_kernel_words_equal_the_flat_bytes_when_rows_fill_whole_words():
    keep = torch.rand(3, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    words = kernel.pack_mask_words(keep.float())["mask"]  # (rows, 2) int16, bit j of word c = column 16c + j
    assert torch.equal(words.contiguous().view(torch.uint8).reshape(-1), pack_bits(keep))


def test_version_1_mask_files_still_read(tmp_path):
    keep = torch.rand(4, 10, generator=torch.Generator().manual_seed(2)) > 0.5
    big = torch.from_numpy(np.packbits(keep.reshape(-1).numpy()))  # numpy's default big bit order
    save_file({"l": big}, str(tmp_path / "v1.safetensors"),
              metadata={"format": "prunekit-masks", "version": "1", "shapes": '{"l": [4, 10]}'})
    assert torch.equal(load_masks(tmp_path / "v1.safetensors")["l"], keep)


@pytest.mark.parametrize(("shape", "message"), [([4, 10], "expected 5 packed bytes"),
                                              ([100000, 100000], "expected 1250000000 packed bytes"),
                                              ([4, -10], "not a list of sizes"), ("4x10", "not a list of sizes")])
def test_mask_shapes_are_checked_against_the_stored_bytes_before_unpacking(tmp_path, shape, message):
    """Re-sealed (checksum right): a shape that does not fit its one stored byte is an error, not a
    40 GB allocation or a wrong table."""
    save_tensors({"l": torch.zeros(1, dtype=torch.uint8)}, tmp_path / "t.safetensors", "prunekit-masks",
                 {"version": 2, "shapes": {"l": shape}})
    with pytest.raises(PrunekitError, match=f"mask of l: .*{message}"):
        load_masks(tmp_path / "t.safetensors")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_corruption_of_a_mask_file_never_loads_other_masks(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    keep = torch.rand(6, 13, generator=torch.Generator().manual_seed(3)) > 0.5
    save_masks({"layer": keep}, path)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    try:
        back = load_masks(path)
    except PrunekitError:
        return
    assert list(back) == ["layer"] and torch.equal(back["layer"], keep)
