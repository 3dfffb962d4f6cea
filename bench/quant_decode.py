"""Issue 17's end-to-end speed target: SmolLM2-135M decode at batch 1, bf16, dense vs quantized (and 2:4)
execution, beside llama.cpp on the same model, alternating in this one script.

prunekit variants, each built from the default model (only the weights' pattern and grid matter for
speed: magnitude 2:4 and RTN grids, int4 asymmetric in groups of 128 with a 64-wide last group on the
576-wide inputs, int8 symmetric per channel) and run in bf16:
  dense        torch's nn.Linear on bf16 weights (what a user of plain transformers gets)
  gemv         the same weights on prunekit's compiled dense layout (``sparsify``, every layer gemv)
  int8         int8 weights, ``sparsify`` with the grids (measured choice per layer)
  int4         int4 g128 weights, likewise
  2:4          2:4 in bf16 (no grid): the sparse float layouts, likewise
  2:4+int4     2:4 then int4 g128, likewise
Each but dense also runs its output head on the compiled GEMV over the tied weight where that measures faster
(``sparsify``'s ``head``); a ``/torch-head`` suffix (``2:4+int4/torch-head``) leaves the head on torch's.
llama.cpp (``--llama``: llama-cpp-python, set up by bench/llamacpp/setup.sh and make_gguf.sh) runs the
F16, BF16, Q8_0 and Q4_0 conversions of the same model in a worker process (bench/llamacpp/worker.py)
that answers between prunekit's runs, with the same prompt (16 random token ids, seeded) and token
counts, the same thread count, greedy decoding. Decode tok/s = (n − 1) / (t_n − t_1): the prompt's
prefill cancels out. Each rep runs every variant once; medians over reps. Target: 2:4+int4 ≥ 2× dense.

A profile of one generation per prunekit variant says where each token's time goes: the block linears (the
kernels, or nn.Linear), the output head (a bf16 GEMV over the 49152-token vocabulary, not a pruning target),
and the rest (attention, norms, the generate loop: per-token framework overhead).

    .venv/bin/python bench/quant_decode.py [--reps 5] [--new-tokens 32] [--llama runs/gguf]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.measure.bench import weight_bytes
from prunekit.measure.hardware import cpu_info
from prunekit.models import load_model
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune
from prunekit.run.sparse_linear import SparseLinear
from prunekit.run.swap import sparsify
from prunekit.store.manifest import build_manifest, write_json
from prunekit.targets import find_targets

LLAMA = {"llama.cpp F16": "f16", "llama.cpp BF16": "bf16", "llama.cpp Q8_0": "q8_0", "llama.cpp Q4_0": "q4_0"}
WORKER = Path(__file__).parent / "llamacpp" / "worker.py"
LLAMA_PY = Path(__file__).parent / "llamacpp" / ".venv" / "bin" / "python"


def variant(name: str) -> tuple[nn.Module, dict]:
    """The default model as ``name`` runs it (bf16, layouts chosen), and its layer layout counts."""
    name, _, suffix = name.partition("/")
    model, _, _ = load_model("default", torch.float32)
    quant = {"int8": {"wbits": 8, "groupsize": 0, "sym": True},
             "int4": {"wbits": 4, "groupsize": 128, "uneven_groups": True},
             "2:4+int4": {"wbits": 4, "groupsize": 128, "uneven_groups": True}}.get(name)
    grids, sparse = None, name.startswith("2:4")
    if quant or sparse:
        cfg = PruneConfig(method="magnitude", sparsity=0.5 if sparse else 0.0, pattern="2:4" if sparse else "unstructured",
                          **({"quant": quant | {"quant_method": "rtn"}} if quant else {}))
        grids = prune(model, cfg).grids or None
    model = model.to(torch.bfloat16).eval()
    if name == "dense":
        return model, {"dense": len(find_targets(model))}
    choices = sparsify(model, layout="gemv" if name == "gemv" else "auto", grids=grids, head=suffix != "torch-head")
    return model, dict(Counter(c.layout for c in choices))


def generate(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    t = time.perf_counter()
    model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, use_cache=True, pad_token_id=0)
    return time.perf_counter() - t


def profile(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Milliseconds per decoded token in the block linears, in the output head, and in everything else
    (attention, norms, the generate loop), from timers around each linear and the head."""
    spent = {"linears": 0.0, "head": 0.0}

    def timed(forward, part):
        def call(x):
            t = time.perf_counter()
            y = forward(x)
            spent[part] += time.perf_counter() - t
            return y
        return call

    head = model.get_output_embeddings()
    blocks = [m for m in model.modules() if isinstance(m, (nn.Linear, SparseLinear)) and m is not head]
    layers = {m: "linears" for m in blocks} | {head: "head"}
    for m, part in layers.items():
        m.forward = timed(m.forward, part)
    try:
        generate(model, prompt, 1)
        spent.update(linears=0.0, head=0.0)
        one, at_one = generate(model, prompt, 1), dict(spent)
        spent.update(linears=0.0, head=0.0)
        total = generate(model, prompt, new_tokens)
    finally:
        for m in layers:
            del m.forward  # the class's own forward again
    per = {k: (spent[k] - at_one[k]) / (new_tokens - 1) for k in spent}
    per_token = (total - one) / (new_tokens - 1)
    return {"ms_per_token": round(per_token * 1e3, 2), "linears_ms": round(per["linears"] * 1e3, 2),
            "head_ms": round(per["head"] * 1e3, 2), "rest_ms": round((per_token - sum(per.values())) * 1e3, 2)}


class LlamaWorker:
    """bench/llamacpp/worker.py in its own venv, answering one request at a time."""

    def __init__(self, gguf_dir: Path, threads: int) -> None:
        specs = [f"{name}={gguf_dir / f'smollm2-135m-{t}.gguf'}" for name, t in LLAMA.items()]
        missing = [s for s in specs if not Path(s.split("=", 1)[1]).is_file()]
        if missing or not LLAMA_PY.is_file():
            sys.exit(f"llama.cpp is not set up: run bench/llamacpp/setup.sh and bench/llamacpp/make_gguf.sh ({missing})")
        self.proc = subprocess.Popen([str(LLAMA_PY), str(WORKER), *specs, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def run(self, name: str, prompt: list[int], new_tokens: int) -> tuple[float, float]:
        self.proc.stdin.write(json.dumps({"model": name, "prompt": prompt, "new_tokens": new_tokens}) + "\n")
        self.proc.stdin.flush()
        r = json.loads(self.proc.stdout.readline())
        return r["seconds_n"], r["seconds_1"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="dense,gemv,int8,int4,2:4,2:4+int4")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--llama", default=None, help="folder of the GGUF files (make_gguf.sh); omit to skip llama.cpp")
    ap.add_argument("--out", default="runs/bench-quant-decode.json")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    models, layouts, sizes = {}, {}, {}
    for name in tqdm(args.variants.split(","), desc="building variants"):
        models[name], layouts[name] = variant(name)
        sizes[name] = round(weight_bytes(models[name]) / 2**20, 1)
    vocab = next(iter(models.values())).config.vocab_size
    prompt = torch.randint(0, vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    llama = LlamaWorker(Path(args.llama), threads) if args.llama else None
    names = list(models) + (list(LLAMA) if llama else [])
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            generate(m, prompt, 2)
        if llama:
            for k in LLAMA:
                llama.run(k, prompt[0].tolist(), 2)
        for _ in tqdm(range(args.reps), desc="decode (alternating)"):
            for name in names:
                if name in models:
                    runs[name].append((generate(models[name], prompt, args.new_tokens), generate(models[name], prompt, 1)))
                else:
                    time.sleep(0.2)  # let the other process's worker threads settle before timing
                    runs[name].append(llama.run(name, prompt[0].tolist(), args.new_tokens))
        profiles = {name: profile(m, prompt, args.new_tokens) for name, m in models.items()}
    if llama:
        llama.close()
    tok_s = {k: statistics.median((args.new_tokens - 1) / (n - one) for n, one in r) for k, r in runs.items()}
    spread = {k: [round(min((args.new_tokens - 1) / (n - one) for n, one in r), 1),
                  round(max((args.new_tokens - 1) / (n - one) for n, one in r), 1)] for k, r in runs.items()}
    base = tok_s.get("dense")
    rows = [{"variant": k, "decode_tok_s": round(v, 1), "range": spread[k], "vs_dense": round(v / base, 2) if base else None,
             "layouts": layouts.get(k), "weights_mib": sizes.get(k), "profile": profiles.get(k)} for k, v in tok_s.items()]
    print(f"{'variant':>16} | decode tok/s [range] | × dense bf16 | weights MiB | layouts | ms/token: linears + head + rest")
    for r in rows:
        p = r["profile"]
        prof = f"{p['linears_ms']:.2f} + {p['head_ms']:.2f} + {p['rest_ms']:.2f}" if p else "-"
        print(f"{r['variant']:>16} | {r['decode_tok_s']:>7.1f} [{r['range'][0]}-{r['range'][1]}] | "
              f"{r['vs_dense'] or 0:.2f} | {r['weights_mib'] or '-'} | {r['layouts'] or '-'} | {prof}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(build_manifest(command=sys.argv, machine=cpu_info(), threads=threads, reps=args.reps,
                              new_tokens=args.new_tokens, prompt_tokens=args.prompt_tokens,
                              llama=llama.info if llama else None, rows=rows), args.out)
    print(json.dumps({"out": args.out, "vs_dense": {r["variant"]: r["vs_dense"] for r in rows}}))


if __name__ == "__main__":
    main()
