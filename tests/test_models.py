from pathlib import Path

import pytest

from conftest import byte_tokenizer
from prunekit.errors import PrunekitError
from prunekit.models import load_model, resolve_model_path


def test_local_folder_and_errors(tiny_model_dir, tmp_path):
    model, tok, path = load_model(str(tiny_model_dir))
    assert path == str(tiny_model_dir) and model.config.num_hidden_layers == 2 and tok("ab")["input_ids"]
    with pytest.raises(PrunekitError, match="model path not found"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(PrunekitError, match="model path not found"):
        resolve_model_path("./missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrunekitError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc/self/maps")
def test_loaded_weights_are_not_backed_by_the_checkpoint_file(tiny_model_dir):
    # transformers memory-maps safetensors; load_model copies the weights out, so pruning writes into
    # ordinary memory (no page faults in the solve, peak memory measured against a resident model).
    from transformers import AutoModelForCausalLM

    checkpoint = str(tiny_model_dir / "model.safetensors")
    model, _, _ = load_model(str(tiny_model_dir))
    assert checkpoint not in Path("/proc/self/maps").read_text()
    mapped = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # the check sees a mapping when there is one
    assert checkpoint in Path("/proc/self/maps").read_text()
    del mapped


def test_tied_embeddings_stay_one_parameter(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tied")
    byte_tokenizer().save_pretrained(tmp_path / "tied")
    model, _, _ = load_model(str(tmp_path / "tied"))  # its weights are copied out of the checkpoint's memory map
    assert model.lm_head.weight is model.model.embed_tokens.weight
