import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import byte_tokenizer, tiny_llama
from prunekit import PruneConfig, PrunekitError, prune
from prunekit.fsutil import atomic_dir
from prunekit.store.bits import pack_bits, unpack_bits
from prunekit.store.info import layer_table
from prunekit.store.mask_file import PackedMasks, load_masks, save_masks
from prunekit.store.save import save_pruned


@pytest.mark.parametrize("shape", [(1,), (3, 5), (7, 9), (2, 3, 4)])
def test_pack_roundtrip(shape):
    m = torch.rand(shape) > 0.5
    assert torch.equal(unpack_bits(pack_bits(m), m.numel()).reshape(shape), m)


@pytest.mark.parametrize("spill", [False, True])
def test_packed_masks_hold_one_bit_per_weight_and_count_without_unpacking(tmp_path, spill):
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(7, 9, generator=g) > 0.3, "b": torch.zeros(3, dtype=torch.bool), "c": torch.ones(5, 5) > 0,
             "d": torch.ones(0, 4) > 0}
    (tmp_path / "spill").mkdir()
    packed = PackedMasks(masks, spill=tmp_path / "spill" if spill else None)
    assert packed.nbytes() == (0 if spill else 8 + 1 + 4 + 0)  # memory: none when spilled
    assert list((tmp_path / "spill").iterdir()) == []  # the spill file has no name: nothing is ever left behind
    assert list(packed) == ["a", "b", "c", "d"] and len(packed) == 4
    assert all(torch.equal(packed[n], m) for n, m in masks.items())
    assert packed.kept() == sum(int(m.sum()) for m in masks.values())  # padding bits do not count
    assert packed.numel() == 63 + 3 + 25
    assert packed.packed("a")[0].numel() == 8  # ceil(63 / 8) bytes
    save_masks(packed, tmp_path / "p.safetensors")
    loaded = load_masks(tmp_path / "p.safetensors")
    assert list(loaded) == list(masks) and all(torch.equal(loaded[n], m) for n, m in masks.items())
    if spill:  # the same file, byte for byte, as from memory
        save_masks(PackedMasks(masks), tmp_path / "q.safetensors")
        assert (tmp_path / "p.safetensors").read_bytes() == (tmp_path / "q.safetensors").read_bytes()


def test_save_load_roundtrip_bit_exact(tmp_path):
    model = tiny_llama()
    result = prune(model, PruneConfig(sparsity=0.5, pattern="2:4"), progress=False)
    out = save_pruned(model, tmp_path / "out", result.masks, byte_tokenizer(),
                      manifest={"config": PruneConfig(pattern="2:4").to_dict()})
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    masks = load_masks(out / "masks.safetensors")
    assert all(torch.equal(masks[n], result.masks[n]) for n in result.masks)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["pattern"] == "2:4" and "torch" in manifest["versions"]
    rows, _ = layer_table(out)
    assert len(rows) == 14 and all(r["2:4"] and r["sparsity"] == 0.5 for r in rows)
    packed_bytes = sum((m.numel() + 7) // 8 for m in masks.values())  # one bit per weight
    assert packed_bytes <= (out / "masks.safetensors").stat().st_size < packed_bytes + 8192


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(PrunekitError, match="exists"):
        with atomic_dir(out):
            pass
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == [".prunekit-output", "b"]  # the marker --overwrite looks for


def test_load_masks_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(PrunekitError, match="not a prunekit masks file"):
        load_masks(tmp_path / "x.safetensors")
    save_masks({"a": torch.ones(3, 3, dtype=torch.bool)}, tmp_path / "m.safetensors")
    assert load_masks(tmp_path / "m.safetensors")["a"].all()


def test_save_pruned_writes_a_plain_module_as_safetensors(tmp_path):
    """Any nn.Module (not only Hugging Face models) is saved with its state_dict, exactly."""
    from safetensors.torch import load_file

    from prunekit.store.save import save_pruned

    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[:, ::2] = 0
    save_pruned(model, tmp_path / "out", {"0": model[0].weight != 0})
    back = load_file(tmp_path / "out" / "model.safetensors")
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
