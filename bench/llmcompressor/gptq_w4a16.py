"""The quality anchor of issue 17: llm-compressor's GPTQ W4A16 (int4, symmetric weights) on the default
model under protocol P (C4 calibration 32 × 2048 tokens, seed 0 or ``--seed`` — prunekit's own sample, so both tools see the
same windows; WikiText-2 perplexity over the first 40 windows of 2048, prunekit's evaluator).

    bash bench/llmcompressor/setup.sh            # a venv of its own: llm-compressor pins transformers <= 5.17
    bench/llmcompressor/.venv/bin/python bench/llmcompressor/gptq_w4a16.py --groupsize 64 [--out runs/llmc.json]

Groups of 128 do not fit: SmolLM2's hidden width 576 is 4.5 groups of 128, and llm-compressor 0.14 refuses
(or, with ``bypass_divisibility_checks``, fails in ``unflatten``) on a narrower last group. So the anchor runs
with groups of 64 (both widths, 576 and 1536, divide) and per output channel (``--groupsize 0``).
Prints JSON: perplexity, quantization time, versions, and a check that the weights are on a 16-level grid.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--groupsize", type=int, default=64, help="0: one scale per output channel")
    ap.add_argument("--seed", type=int, default=0, help="calibration sample seed (protocol P: 0)")
    args = ap.parse_args()
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    from prunekit.data import CalibConfig, load_text, sample_calibration
    from prunekit.measure.perplexity import perplexity
    from prunekit.models import load_model

    torch.manual_seed(0)
    model, tok, path = load_model("default")
    calib = sample_calibration(load_text("c4"), tok, CalibConfig("c4", 32, 2048, args.seed))  # (32, 2048)
    ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    strategy = {"strategy": "group", "group_size": args.groupsize} if args.groupsize else {"strategy": "channel"}
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, **strategy)
    recipe = GPTQModifier(config_groups={"w4a16": QuantizationScheme(targets=["Linear"], weights=weights)},
                          ignore=["lm_head"])
    t0 = time.perf_counter()
    oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=2048, num_calibration_samples=32)
    seconds = time.perf_counter() - t0
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    levels = int(torch.unique(w[0, : args.groupsize or None]).numel())  # one row's first group: at most 16 values
    ppl = perplexity(model, tok, load_text("wikitext2"), 2048, 40, progress=False)["perplexity"]
    result = {"tool": "llmcompressor", "version": llmcompressor.__version__, "transformers": transformers.__version__,
              "torch": torch.__version__, "scheme": "W4A16 (int4 symmetric)", "groupsize": args.groupsize, "seed": args.seed,
              "perplexity": ppl, "quantize_seconds": round(seconds, 1), "distinct_values_in_a_group": levels}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
