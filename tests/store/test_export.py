import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import byte_tokenizer, tiny_llama
from prunekit import PruneConfig, PrunekitError, prune
from prunekit.store.export import WEIGHTS_FILE, export_folder, load_exported
from prunekit.store.save import save_pruned


def _pruned_folder(tmp_path, pattern="unstructured", sparsity=0.5, model=None, method="magnitude"):
    model = model or tiny_llama()
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    result = prune(model, PruneConfig(method=method, sparsity=sparsity, pattern=pattern), calib, progress=False)
    return save_pruned(model, tmp_path / f"pruned-{pattern.replace(':', '_')}-{sparsity}", result.masks, byte_tokenizer())


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (torch.equal calls -0.0 and +0.0 equal)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.view(as_int), b.view(as_int))


@pytest.mark.parametrize("fmt,pattern,method", [
    ("bitmask", "unstructured", "magnitude"), ("csr", "unstructured", "magnitude"), ("nm", "2:4", "magnitude"),
    ("auto", "2:4", "magnitude"), ("auto", "unstructured", "magnitude"),
    ("auto", "unstructured", "sparsegpt"), ("auto", "2:4", "sparsegpt")])  # SparseGPT's updates leave negative products
def test_export_roundtrip_bit_exact(tmp_path, fmt, pattern, method):
    folder = _pruned_folder(tmp_path, pattern, method=method)
    report = export_folder(folder, tmp_path / "out", fmt)
    original = load_file(str(folder / "model.safetensors"))
    back = load_exported(tmp_path / "out")
    assert set(back) == set(original) and all(same_bits(back[k], v) for k, v in original.items())
    assert report["target_stored_bytes"] < report["target_dense_bytes"]
    assert (tmp_path / "out" / "config.json").is_file()
    if fmt == "auto" and pattern == "2:4":
        assert report["layers"] == {"nm": 14}


def test_auto_keeps_dense_when_sparse_is_bigger(tmp_path):
    folder = _pruned_folder(tmp_path, sparsity=0.0)  # bitmask would cost 33 bits per fp32 weight
    assert export_folder(folder, tmp_path / "out", "auto")["layers"] == {"dense": 14}


def test_gpt2_conv1d_export(tmp_path):
    import transformers as tf

    torch.manual_seed(0)
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=256, n_positions=32))
    folder = _pruned_folder(tmp_path, "2:4", model=gpt2)
    export_folder(folder, tmp_path / "out", "nm")
    original = load_file(str(folder / "model.safetensors"))
    back = load_exported(tmp_path / "out")
    assert all(torch.equal(back[k], v) for k, v in original.items())


def test_bad_files(tmp_path):
    folder = _pruned_folder(tmp_path)
    export_folder(folder, tmp_path / "out", "csr")
    path = tmp_path / "out" / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PrunekitError, match="corrupt or truncated"):
        load_exported(tmp_path / "out")
    tensors = {"x": torch.zeros(1)}
    save_file(tensors, str(path), metadata={"magic": "prunekit-sparse", "version": "99", "layers": json.dumps({})})
    with pytest.raises(PrunekitError, match="version"):
        load_exported(tmp_path / "out")
    save_file(tensors, str(path), metadata={"magic": "other"})
    with pytest.raises(PrunekitError, match="not a prunekit sparse export"):
        load_exported(tmp_path / "out")
    with pytest.raises(PrunekitError, match="not 2:4 or 4:8"):
        export_folder(folder, tmp_path / "out3", "nm")
    with pytest.raises(PrunekitError, match="unknown format"):
        export_folder(folder, tmp_path / "out4", "zip")
