import pytest

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


def test_loaded_weights_are_not_backed_by_the_checkpoint_file(tiny_model_dir):
    # transformers memory-maps safetensors; load_model copies the weights out, so pruning writes into
    # ordinary memory (no page faults in the solve, peak memory measured against a resident model).
    import sys

    model, _, _ = load_model(str(tiny_model_dir))
    maps = open("/proc/self/maps").read() if sys.platform == "linux" else ""
    assert str(tiny_model_dir / "model.safetensors") not in maps
    assert model.lm_head.weight is model.model.embed_tokens.weight or not model.config.tie_word_embeddings
