import pytest
import torch

from conftest import byte_tokenizer, tiny_llama
from prunekit import PruneConfig, PrunekitError, is_valid_nm, prune
from prunekit.data import TextSource
from prunekit.targets import find_targets, weight_view
from prunekit.train.config import FinetuneConfig
from prunekit.train.finetune import finetune
from prunekit.train.masks import masks_of

TEXT = TextSource("t", ("the quick brown fox jumps over the lazy dog. " * 60,), None, None)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_finetune_keeps_mask_and_learns(lora_rank):
    model, tok = tiny_llama(), byte_tokenizer()
    prune(model, PruneConfig(sparsity=0.5, pattern="2:4"), progress=False)
    zeros = {n: weight_view(t) == 0 for n, t in find_targets(model).items()}
    before = {n: weight_view(t).clone() for n, t in find_targets(model).items()}
    model, log = finetune(model, tok, TEXT, FinetuneConfig(steps=12, seqlen=32, batch_size=2, lr=3e-3, lora_rank=lora_rank),
                          progress=False)
    assert not masks_of(model) and type(model).__name__ == "LlamaForCausalLM"  # plain model back
    targets = find_targets(model)
    for n, t in targets.items():
        w = weight_view(t)
        assert torch.equal(w == 0, zeros[n]) and is_valid_nm(w, 2, 4), n
        assert not torch.signbit(w[zeros[n]]).any(), n  # +0.0, as prune leaves them (LoRA merges back through the mask)
    assert any(not torch.equal(weight_view(t), before[n]) for n, t in targets.items())
    assert sum(log["losses"][-3:]) < sum(log["losses"][:3])


def test_norms_mode_trains_norms_and_biases_only():
    model, tok = tiny_llama(), byte_tokenizer()
    prune(model, PruneConfig(sparsity=0.5), progress=False)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(model.config.hidden_size))
    before = {n: p.clone() for n, p in model.named_parameters()}
    model, log = finetune(model, tok, TEXT, FinetuneConfig(steps=8, seqlen=32, batch_size=2, lr=1e-2, trainable="norms"),
                          progress=False)
    after = dict(model.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    norms = {n for n in before if "norm" in n}
    assert moved == norms | {"model.layers.0.self_attn.q_proj.bias"}, moved ^ norms  # every norm and the bias, nothing else
    assert sum(log["losses"][-3:]) < sum(log["losses"][:3])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trainable": "norms", "lora_rank": 4}, "drop --lora-rank"), ({"trainable": "heads"}, "trainable"),
    ({"steps": 0}, "steps must be >= 1"), ({"lr": float("nan")}, "learning rate"), ({"seqlen": 1}, "seqlen must be >= 2")])
def test_bad_settings(kwargs, message):
    with pytest.raises(PrunekitError, match=message):
        FinetuneConfig(**{"steps": 1} | kwargs)


def test_finetune_with_frozen_grids_moves_levels_not_scales():
    from prunekit.quant.config import QuantConfig

    model, tok = tiny_llama(), byte_tokenizer()
    result = prune(model, PruneConfig(pattern="2:4", quant=QuantConfig(wbits=4, groupsize=32, quant_method="rtn")),
                   progress=False)
    before = {n: weight_view(t).clone() for n, t in find_targets(model).items()}
    model, log = finetune(model, tok, TEXT, FinetuneConfig(steps=12, seqlen=32, batch_size=2, lr=3e-3), progress=False,
                          grids=result.grids)
    assert not masks_of(model) and type(model).__name__ == "LlamaForCausalLM"
    moved = 0
    for n, t in find_targets(model).items():
        w = weight_view(t)
        assert bool((w[~result.masks[n]] == 0).all()), n  # pruned stays pruned
        assert torch.equal(result.grids[n].apply(w), w), n  # on the same, frozen grid
        moved += int((w != before[n]).sum())
    assert moved > 0 and sum(log["losses"][-3:]) < sum(log["losses"][:3])
    with pytest.raises(PrunekitError, match="drop --lora-rank"):
        finetune(model, tok, TEXT, FinetuneConfig(steps=1, seqlen=32, lora_rank=4), progress=False, grids=result.grids)
