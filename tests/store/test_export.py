import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from conftest import byte_tokenizer, tiny_llama
from prunekit import PruneConfig, PrunekitError, prune
from prunekit.selection import nm_mask, zero_pruned_
from prunekit.store.bits import pack_bits
from prunekit.store.container import load_tensors, save_tensors
from prunekit.store.effective_bits import run_bits
from prunekit.store.export import WEIGHTS_FILE, export_folder, load_exported
from prunekit.store.formats import encode, kept_positions
from prunekit.store.save import save_pruned
from prunekit.targets import find_targets, weight_view


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


@pytest.mark.parametrize("fmt,pattern,version", [("bitmask", "unstructured", 2), ("nm", "2:4", 4)])
def test_a_file_takes_the_lowest_version_that_reads_it(tmp_path, fmt, pattern, version):
    folder = _pruned_folder(tmp_path, pattern)
    export_folder(folder, tmp_path / "out", fmt)
    assert load_tensors(tmp_path / "out" / WEIGHTS_FILE, "prunekit-sparse")[1]["version"] == version


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


def _small_export(tmp_path, fmt: str, pattern: str = "unstructured", version: int = 4):
    """A one-layer export (8 × 16 weight), as tensors plus layer table, and a writer that re-seals edits
    (versions 2 and 4) or writes the version-1 file, which has no checksum. Before version 4, N:M positions
    are stored 2 bits each (``indices``)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, generator=g)
    zero_pruned_(w, nm_mask(w.abs(), 2, 4) if pattern == "2:4" else torch.rand(8, 16, generator=g) > 0.5)
    nm = (2, 4) if fmt == "nm" else None
    parts = encode(w, fmt, nm)
    if fmt == "nm" and version < 4:
        parts = {"values": parts["values"], "indices": pack_bits(kept_positions(w != 0, 2, 4), 2)}
    tensors = {f"l.weight::{k}": v for k, v in parts.items()} | {"other": torch.ones(3)}
    layers = {"l.weight": {"format": fmt, "shape": [8, 16], "dtype": "float32", "nm": list(nm) if nm else None,
                           "transposed": False}}
    (tmp_path / "x").mkdir(exist_ok=True)

    def write(tensors=tensors, layers=layers):
        path = tmp_path / "x" / WEIGHTS_FILE
        if version > 1:
            save_tensors(tensors, path, "prunekit-sparse", {"version": version, "layers": layers})
        else:
            meta = {"magic": "prunekit-sparse", "version": "1", "layers": json.dumps(layers)}
            save_file(tensors, str(path), metadata=meta)
        return tmp_path / "x"

    return w, tensors, layers, write


def _edit(tensors, key, fn):
    out = dict(tensors)
    out[key] = fn(out[key].clone())
    return out


def _positions(tensors):
    return next(k for k in tensors if k.endswith(("::ranks", "::indices")))


def _set(t, i, v):
    t[i] = v
    return t


CORRUPT = [  # (format, pattern, what, edit of (tensors, layers) -> (tensors, layers)), each re-sealed
    ("csr", "unstructured", "column past the row end",
     lambda t, la: (_edit(t, "l.weight::col", lambda c: _set(c, 0, 16)), la)),
    ("csr", "unstructured", "negative column",
     lambda t, la: (_edit(t, "l.weight::col", lambda c: _set(c.to(torch.int16), 0, -1)), la)),
    ("csr", "unstructured", "duplicate column", lambda t, la: (_edit(t, "l.weight::col", lambda c: _set(c, 1, c[0])), la)),
    ("csr", "unstructured", "row pointers out of order",
     lambda t, la: (_edit(t, "l.weight::crow", lambda r: _set(r, 1, r[2] + 1)), la)),
    ("nm", "2:4", "N:M positions all ones",  # 2-bit positions (3, 3); ranks: a chunk past 6^5
     lambda t, la: (_edit(t, _positions(t), lambda i: i.fill_(255)), la)),
    ("nm", "2:4", "short N:M positions", lambda t, la: (_edit(t, _positions(t), lambda i: i[:-1]), la)),
    ("bitmask", "unstructured", "missing part",
     lambda t, la: ({k: v for k, v in t.items() if not k.endswith("::mask")}, la)),
    ("bitmask", "unstructured", "dense layer without its tensor",
     lambda t, la: ({k: v for k, v in t.items() if "::" not in k}, {"l.weight": la["l.weight"] | {"format": "dense"}})),
    ("bitmask", "unstructured", "layer table not a mapping", lambda t, la: (t, ["l.weight"])),
    ("bitmask", "unstructured", "shape that does not fit its mask",
     lambda t, la: (t, {"l.weight": la["l.weight"] | {"shape": [8, 17]}})),
    ("nm", "2:4", "N:M that does not divide the width", lambda t, la: (t, {"l.weight": la["l.weight"] | {"nm": [2, 3]}})),
]


@pytest.mark.parametrize("version", [1, 2, 4])
@pytest.mark.parametrize(("fmt", "pattern", "what", "edit"), CORRUPT, ids=[c[2] for c in CORRUPT])
def test_every_invariant_is_checked_on_load(tmp_path, fmt, pattern, what, edit, version):
    """Edits that keep the checksum right (re-sealed, as a deliberate edit would be), or in a version-1
    file that has none: the structural checks alone must refuse each one with a PrunekitError naming the
    layer (it was silently wrong weights, a KeyError, or a ZeroDivisionError before)."""
    w, tensors, layers, write = _small_export(tmp_path, fmt, pattern, version)
    assert torch.equal(load_exported(write())["l.weight"], w)
    with pytest.raises(PrunekitError, match=r"l\.weight|layer table|parts of no listed layer") as e:
        load_exported(write(*edit(tensors, layers)))
    assert str(tmp_path) in str(e.value)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_corruption_never_loads_wrong_weights(tmp_path_factory, data):
    """Random byte changes anywhere in a valid export file: a PrunekitError, or the very same weights."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    fmt = data.draw(st.sampled_from(["bitmask", "csr", "nm"]))
    w, tensors, layers, write = _small_export(tmp_path, fmt, "2:4")
    path = write() / WEIGHTS_FILE
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    try:
        back = load_exported(path.parent)
    except PrunekitError:
        return
    assert same_bits(back["l.weight"], w) and torch.equal(back["other"], torch.ones(3))


@pytest.mark.parametrize("pattern,sparsity,order", [("2:4", 0.5, "joint"), ("unstructured", 0.5, "prune-first"),
                                                    ("unstructured", 0.0, "prune-first")])
@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_export_rebuilds_the_dequantized_weights_bit_for_bit(tmp_path, pattern, sparsity, order, bits):
    from prunekit.quant.config import QuantConfig

    model = tiny_llama()
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    config = PruneConfig(method="sparsegpt", sparsity=sparsity, pattern=pattern, blocksize=32, calib_dtype="model",
                         quant=QuantConfig(wbits=bits, groupsize=32, order=order))
    result = prune(model, config, calib, progress=False)
    folder = save_pruned(model, tmp_path / "q", result.masks, byte_tokenizer(), grids=result.grids,
                         manifest={"config": config.to_dict()})
    report = export_folder(folder, tmp_path / "x")
    layouts = set(report["layers"])
    assert layouts <= {"q-nm", "q-bitmask", "q-dense"} and len(report["layers"]) > 0
    header = load_tensors(tmp_path / "x" / WEIGHTS_FILE, "prunekit-sparse")[1]
    assert header["version"] == (4 if "q-nm" in layouts else 3)
    if sparsity == 0.0:
        assert layouts == {"q-dense"}
    state = load_exported(tmp_path / "x")
    for key, value in model.state_dict().items():
        assert same_bits(state[key], value), key
    assert report["target_stored_bytes"] < report["target_dense_bytes"] * (bits + 1) / 32  # float32 -> ~bits
    # what info counts, given each layer's nonzeros (a kept weight may round to 0), is what the export stores
    weights = {name: weight_view(m) for name, m in find_targets(model).items()}
    nonzero = {name: (tuple(w.shape), int((w != 0).sum())) for name, w in weights.items()}
    counted = run_bits(nonzero, result.grids, config.nm, 32)["model"]["bytes"]
    assert 0 <= report["target_stored_bytes"] - counted <= 3 * len(result.grids)  # each part rounds up to a byte


def test_a_quantized_export_with_a_flipped_bit_is_refused(tmp_path):
    from prunekit.quant.config import QuantConfig

    model = tiny_llama()
    config = PruneConfig(quant=QuantConfig(wbits=4, groupsize=32, quant_method="rtn"))
    result = prune(model, config, progress=False)
    folder = save_pruned(model, tmp_path / "q", result.masks, grids=result.grids)
    export_folder(folder, tmp_path / "x")
    path = tmp_path / "x" / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PrunekitError, match="checksum"):
        load_exported(tmp_path / "x")


def test_a_quantized_export_takes_the_asked_format_or_refuses_before_writing(tmp_path):
    from prunekit.quant.config import QuantConfig

    model = tiny_llama()
    config = PruneConfig(pattern="2:4", quant=QuantConfig(wbits=4, groupsize=32, quant_method="rtn"))
    result = prune(model, config, progress=False)
    folder = save_pruned(model, tmp_path / "q", result.masks, grids=result.grids)
    for fmt in ("nm", "bitmask"):
        assert set(export_folder(folder, tmp_path / fmt, fmt)["layers"]) == {f"q-{fmt}"}
        state = load_exported(tmp_path / fmt)
        assert all(same_bits(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(PrunekitError, match="not csr"):
        export_folder(folder, tmp_path / "csr", "csr")
    unstructured = tiny_llama()
    result = prune(unstructured, PruneConfig(quant=QuantConfig(wbits=4, groupsize=32, quant_method="rtn")),
                   progress=False)
    folder = save_pruned(unstructured, tmp_path / "u", result.masks, grids=result.grids)
    with pytest.raises(PrunekitError, match="not 2:4 or 4:8"):
        export_folder(folder, tmp_path / "u-nm", "nm")
    assert not (tmp_path / "u-nm").exists() and not (tmp_path / "csr").exists()
