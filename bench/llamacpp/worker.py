"""llama.cpp's side of bench/quant_decode.py, run with bench/llamacpp/.venv's Python: loads GGUF files, then
answers one JSON request per line on stdin with one JSON line on stdout, so the caller can alternate its
own runs with these in one script. A request {"model": name, "prompt": [ids], "new_tokens": n} decodes
greedily (batch 1, KV cache) and returns the seconds for n tokens and for 1 (each including the prompt's
prefill, which the caller cancels: decode tok/s = (n − 1) / (t_n − t_1)).

    python worker.py NAME=PATH [NAME=PATH ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import llama_cpp
import numpy as np


def generate(llm: llama_cpp.Llama, prompt: list[int], new_tokens: int) -> float:
    t = time.perf_counter()
    llm.reset()
    llm.eval(prompt)
    for _ in range(new_tokens - 1):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=1024)
    args = ap.parse_args()
    models = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        models[name] = llama_cpp.Llama(model_path=path, n_ctx=args.ctx, n_threads=args.threads,
                                       n_threads_batch=args.threads, n_batch=512, verbose=False)
    print(json.dumps({"ready": sorted(models), "llama_cpp": llama_cpp.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        llm = models[req["model"]]
        n = generate(llm, req["prompt"], req["new_tokens"])
        one = generate(llm, req["prompt"], 1)
        print(json.dumps({"seconds_n": n, "seconds_1": one}), flush=True)


if __name__ == "__main__":
    main()
