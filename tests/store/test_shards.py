"""store/shards.py: the streaming safetensors writer and the per-block checkpoint reader/writer."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from prunekit.errors import PrunekitError
from prunekit.store.shards import INDEX_FILE, CheckpointReader, ShardWriter, write_safetensors


def test_write_safetensors_reads_back_exactly_with_safetensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "w": torch.randn(5, 3, generator=g),
        "half": torch.randn(7, generator=g).to(torch.bfloat16),   # 14 bytes: later tensors must stay aligned
        "fp16": torch.randn(3, generator=g).half(),
        "mask": torch.rand(9, generator=g) > 0.5,
        "ids": torch.arange(4, dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "transposed": torch.randn(4, 6, generator=g).t(),          # not contiguous
        "bytes": torch.randint(0, 255, (11,), dtype=torch.uint8, generator=g),
    }
    write_safetensors(tmp_path / "x.safetensors", tensors, {"format": "pt", "k": "v"})
    back = load_file(tmp_path / "x.safetensors")
    assert back.keys() == tensors.keys()
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t), k
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
    raw = (tmp_path / "x.safetensors").read_bytes()
    assert int.from_bytes(raw[:8], "little") % 8 == 0


def test_shard_writer_and_reader_round_trip(tmp_path):
    writer = ShardWriter(tmp_path, 2)
    writer.write({"a.weight": torch.ones(2, 2)})
    writer.write({"b.weight": torch.full((3,), 2.0, dtype=torch.bfloat16), "b.steps": torch.tensor([7])})
    writer.finish()
    assert (tmp_path / INDEX_FILE).is_file()
    reader = CheckpointReader(tmp_path)
    assert reader.nbytes() == 16 + 6 + 8 and reader.nbytes(torch.float32) == 16 + 12 + 8  # ints keep their width
    got = reader.read(["b.weight", "b.steps", "a.weight"], torch.float32)
    assert got["b.weight"].dtype == torch.float32 and got["b.steps"].dtype == torch.int64
    assert torch.equal(got["a.weight"], torch.ones(2, 2))
    with pytest.raises(PrunekitError, match="no tensor 'c'"):
        reader.read(["c"], torch.float32)
    with pytest.raises(RuntimeError, match="more than the 2 shards"):
        writer.write({"c": torch.ones(1)})


def test_reader_refuses_a_folder_without_safetensors(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(PrunekitError, match="safetensors checkpoints only"):
        CheckpointReader(tmp_path)


def test_reader_refuses_truncated_and_lying_shards(tmp_path):
    import json

    write_safetensors(tmp_path / "model.safetensors", {"w": torch.ones(64), "b": torch.ones(4)})
    raw = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(raw[:-100])
    with pytest.raises(PrunekitError, match="not a readable safetensors file|corrupt or truncated"):
        CheckpointReader(tmp_path).read(["w"], torch.float32)
    # a header whose offsets point past the data (the file's own length check passes: safetensors is not asked)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["w"]["data_offsets"] = [32, 32 + 256]  # the data holds 16 + 256 bytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (tmp_path / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    reader = CheckpointReader.__new__(CheckpointReader)
    reader.folder, reader.files, reader._headers = tmp_path, {"w": "model.safetensors"}, {}
    with pytest.raises(PrunekitError, match="corrupt or truncated"):
        reader.read(["w"], torch.float32)
