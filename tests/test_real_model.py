"""A few checks on the real SmolLM2-135M (installed by scripts/setup.sh) and the shared data."""

import pytest

from prunekit import PruneConfig, is_valid_nm, prune
from prunekit.data import CalibConfig, load_text, sample_calibration, shared_data_dir
from prunekit.measure.perplexity import perplexity
from prunekit.targets import find_targets, weight_view

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


@pytest.fixture(scope="module")
def default_model():
    from prunekit.models import load_model

    try:
        model, tok, _ = load_model("default")
    except Exception as e:  # noqa: BLE001 - a missing optional install is a skip, not a failure
        pytest.skip(f"default model unavailable: {e}")
    return model, tok


@pytest.fixture(scope="module")
def shared():
    if shared_data_dir() is None:
        pytest.skip("../shared/data not found (set PRUNEKIT_DATA)")
    return load_text("wikitext2"), load_text("c4")


def test_default_model_prunes_and_stays_sane(default_model, shared):
    model, tok = default_model
    wiki, c4 = shared
    assert len(find_targets(model)) == 30 * 7 and model.config.num_hidden_layers == 30
    dense = perplexity(model, tok, wiki, seqlen=256, max_windows=4, progress=False)["perplexity"]
    assert 5 < dense < 60  # a working pretrained LM, not a random one (random: ~49k)
    calib = sample_calibration(c4, tok, CalibConfig("c4", 4, 256, seed=0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        result = prune(model, PruneConfig(method="wanda", pattern="2:4", sequential="sublayer"), calib, progress=False)
        assert all(is_valid_nm(weight_view(m), 2, 4) for m in find_targets(model).values())
        assert result.sparsity == pytest.approx(0.5)
        pruned = perplexity(model, tok, wiki, seqlen=256, max_windows=4, progress=False)["perplexity"]
        assert dense < pruned < 50 * dense
    finally:
        model.load_state_dict(state)



def test_gguf_file_converts_once_and_saves_loadable(tmp_path, monkeypatch):
    from prunekit.models import default_gguf_path, load_model

    try:
        gguf = default_gguf_path()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"default model unavailable: {e}")
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    model, tok, path = load_model(str(gguf))
    assert path.startswith(str(tmp_path / "cache")) and model.config.model_type == "llama"
    assert not getattr(model.config, "quantization_config", None)
    assert tok("hello")["input_ids"]
    _, _, again = load_model(str(gguf))  # second load reuses the converted folder
    assert again == path and len(list((tmp_path / "cache" / "models").iterdir())) == 1
