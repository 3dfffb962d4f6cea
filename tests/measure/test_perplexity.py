import math

import torch
import torch.nn.functional as F

from conftest import byte_tokenizer, tiny_llama
from prunekit.data import TextSource
from prunekit.measure.perplexity import perplexity


def test_matches_hand_computation():
    model, tok = tiny_llama(), byte_tokenizer()
    text = "abcdefghij" * 20  # 200 tokens
    src = TextSource("t", (text,), None, None)
    res = perplexity(model, tok, src, seqlen=64, progress=False)
    assert res["windows"] == 3 and res["total_windows"] == 3
    ids = torch.tensor(tok(text)["input_ids"][: 3 * 64]).view(3, 64)
    with torch.no_grad():
        nll = sum(float(F.cross_entropy(model(w[None]).logits[0, :-1], w[1:])) * 64 for w in ids)
    assert math.isclose(res["perplexity"], math.exp(nll / (3 * 64)), rel_tol=1e-5)
    assert perplexity(model, tok, src, seqlen=64, max_windows=1, progress=False)["windows"] == 1
    batched = perplexity(model, tok, src, seqlen=64, batch_size=2, progress=False)
    assert math.isclose(batched["perplexity"], res["perplexity"], rel_tol=1e-5)
