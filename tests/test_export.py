import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import byte_tokenizer, tiny_llama
from prunekit import PruneConfig, PrunekitError, prune
from prunekit.export import WEIGHTS_FILE, export_folder, load_exported
from prunekit.save import save_pruned


def _pruned_folder(tmp_path, pattern="unstructured", sparsity=0.5, model=None):
    model = model or tiny_llama()
    result = prune(model, PruneConfig(sparsity=sparsity, pattern=pattern), progress=False)
    return save_pruned(model, tmp_path / f"pruned-{pattern.replace(':', '_')}-{sparsity}", result.masks, byte_tokenizer())


@pytest.mark.parametrize("fmt,pattern", [("bitmask", "unstructured"), ("csr", "unstructured"), ("nm", "2:4"),
                                         ("auto", "2:4"), ("auto", "unstructured")])
def test_export_roundtrip_bit_exact(tmp_path, fmt, pattern):
    folder = _pruned_folder(tmp_path, pattern)
    report = export_folder(folder, tmp_path / "out", fmt)
    original = load_file(str(folder / "model.safetensors"))
    back = load_exported(tmp_path / "out")
    assert set(back) == set(original) and all(torch.equal(back[k], v) for k, v in original.items())
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
