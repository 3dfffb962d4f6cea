"""Pruning from disk (``DiskOffload``) gives the same tensors and masks as pruning in memory."""

import pytest
import torch
import transformers as tf

from conftest import ARCHS, tiny_arch
from prunekit import PruneConfig, prune
from prunekit.errors import PrunekitError
from prunekit.models import load_skeleton
from prunekit.oneshot.residency import DiskOffload, InMemory
from prunekit.store.save import write_streamed
from prunekit.store.shards import INDEX_FILE, CheckpointReader, ShardWriter
from prunekit.targets import find_blocks


def _calib(n=4, seqlen=16):
    return torch.randint(0, 128, (n, seqlen), generator=torch.Generator().manual_seed(3))


def _saved(tmp_path, arch, **kw):
    folder = tmp_path / "model"
    tiny_arch(arch).save_pretrained(folder, **kw)
    return folder


def _from_disk(folder, out, config, calib):
    model, _, _, reader = load_skeleton(str(folder), tokenizer=False)
    out.mkdir()
    writer = ShardWriter(out, len(find_blocks(model)[1]) + 1)
    result = prune(model, config, calib, progress=False, residency=DiskOffload(reader, writer, torch.float32))
    write_streamed(model, writer)
    assert all(p.is_meta for p in find_blocks(model)[1].parameters())  # every block freed
    return result


def _in_memory(folder, config, calib):
    model = tf.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return prune(model, config, calib, progress=False), model


CASES = {
    "wanda-50": PruneConfig(method="wanda", sparsity=0.5),
    "sparsegpt-2:4": PruneConfig(method="sparsegpt", pattern="2:4", blocksize=16),
    "sparsegpt-sublayer": PruneConfig(method="sparsegpt", sparsity=0.6, sequential="sublayer", blocksize=16),
    "wanda-owl": PruneConfig(method="wanda", sparsity=0.6, allocation="owl"),
    "magnitude": PruneConfig(method="magnitude", sparsity=0.4),
    "wanda-recover": PruneConfig(method="wanda", sparsity=0.5, recovery={"recover": "block", "recover_epochs": 1,
                                                                         "recover_lr": 1e-3}),
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_disk_offload_equals_in_memory(tmp_path, arch, case):
    folder = _saved(tmp_path, arch)
    calib = _calib()
    ref, model = _in_memory(folder, CASES[case], calib)
    got = _from_disk(folder, tmp_path / "out", CASES[case], calib)
    assert (tmp_path / "out" / INDEX_FILE).is_file()
    loaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, t in loaded.state_dict().items():
        assert torch.equal(t, expected[name]), name
    assert list(got.masks) == list(ref.masks)
    assert all(torch.equal(got.masks[n], ref.masks[n]) for n in ref.masks)
    assert [r.name for r in got.layers] == [r.name for r in ref.layers]
    assert tf.AutoConfig.from_pretrained(tmp_path / "out").to_dict() == loaded.config.to_dict()


def test_sharded_checkpoint_with_tied_embeddings(tmp_path):
    folder = _saved(tmp_path, "opt", max_shard_size="20KB")  # OPT ties its head to the embeddings
    assert (folder / INDEX_FILE).is_file() and len(list(folder.glob("*.safetensors"))) > 2
    config = PruneConfig(method="sparsegpt", sparsity=0.5, blocksize=16)
    ref, model = _in_memory(folder, config, _calib())
    _from_disk(folder, tmp_path / "out", config, _calib())
    loaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    assert all(torch.equal(t, model.state_dict()[n]) for n, t in loaded.state_dict().items())
    assert "lm_head.weight" not in CheckpointReader(tmp_path / "out").files  # stored once, as save_pretrained does


def test_global_allocation_from_disk_is_refused(tmp_path):
    folder = _saved(tmp_path, "llama-gqa")
    model, _, _, reader = load_skeleton(str(folder), tokenizer=False)
    with pytest.raises(PrunekitError, match="global allocation"):
        prune(model, PruneConfig(method="magnitude", scope="global"), None, progress=False,
              residency=DiskOffload(reader, None, torch.float32))


def test_non_finite_weights_are_caught_when_streamed(tmp_path):
    model = tiny_arch("llama-gqa")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "model")
    skeleton, _, _, reader = load_skeleton(str(tmp_path / "model"), tokenizer=False)
    with pytest.raises(PrunekitError, match=r"layers\.1\.mlp\.down_proj"):
        prune(skeleton, PruneConfig(method="wanda"), _calib(), progress=False,
              residency=DiskOffload(reader, None, torch.float32))


def test_checkpoint_without_the_models_names_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _saved(tmp_path, "llama-gqa")
    tensors = load_file(folder / "model.safetensors")
    save_file({k.replace("model.", "base."): v for k, v in tensors.items()}, folder / "model.safetensors")
    with pytest.raises(PrunekitError, match="names do not match"):
        load_skeleton(str(folder), tokenizer=False)


def test_in_memory_residency_moves_each_block_and_back():
    """Each block runs on the residency's device and returns home after: the stand-in for --device cuda."""
    seen = []

    class Recording(InMemory):
        def load(self, name, block):
            super().load(name, block)
            seen.append((name, next(block.parameters()).dtype))

        def release(self, name, block, final):
            super().release(name, block, final)
            assert next(block.parameters()).device.type == "cpu"

    ref, moved = tiny_arch("llama-gqa"), tiny_arch("llama-gqa")
    prune(ref, PruneConfig(method="wanda"), _calib(), progress=False)
    prune(moved, PruneConfig(method="wanda"), _calib(), progress=False, residency=Recording("cpu"))
    assert [n for n, _ in seen] == ["model.layers.0", "model.layers.1"]
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), moved.state_dict().values(), strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_residency_matches_cpu_masks_closely():
    ref, gpu = tiny_arch("llama-gqa"), tiny_arch("llama-gqa")
    config = PruneConfig(method="sparsegpt", sparsity=0.5, blocksize=16, calib_dtype="model")
    a = prune(ref, config, _calib(), progress=False)
    b = prune(gpu, config, _calib(), progress=False, residency=InMemory("cuda"))
    assert all(p.device.type == "cpu" for p in gpu.parameters())
    agree = [float((a.masks[n] == b.masks[n]).float().mean()) for n in a.masks]
    assert min(agree) > 0.95


def test_moe_checkpoint_with_per_expert_names_is_refused_up_front(tmp_path):
    """transformers 5 fuses Mixtral's per-expert tensors while loading; streaming cannot, so it says so."""
    from test_architectures import _mixtral

    _mixtral().save_pretrained(tmp_path / "moe")
    with pytest.raises(PrunekitError, match="prune this model in memory"):
        load_skeleton(str(tmp_path / "moe"), tokenizer=False)


def test_memory_bound_counts_the_streamed_block(tmp_path):
    folder = _saved(tmp_path, "llama-gqa")
    got = _from_disk(folder, tmp_path / "out", PruneConfig(method="wanda"), _calib())
    block = sum(t.nbytes for t in tiny_arch("llama-gqa").model.layers[0].state_dict().values())
    assert got.info["memory_bound"]["streamed_block_mb"] == round(block / 2**20, 1)
    assert "masks_mb" not in got.info["memory_bound"] and got.masks.nbytes() == 0  # spilled beside the output
    ref, _ = _in_memory(folder, PruneConfig(method="wanda"), _calib())
    assert "streamed_block_mb" not in ref.info["memory_bound"]
