"""Prune a model larger than this machine's memory: a Llama-architecture model at 7B shape (hidden 4096,
32 blocks, MLP 11008, vocabulary 32000) with random float32 weights, ~27 GB on disk.

The checkpoint is written one block at a time (never held in memory), then pruned from disk with
``DiskOffload`` (one block resident) by each method; per block the read, calibrate + solve and write times
are recorded, with the peak RSS of the whole process and the bytes written. Every file is deleted at the
end (pass ``--keep`` to keep the input for another run).

    .venv/bin/python bench/out_of_core.py --dir /tmp/ooc --runs wanda:2:4 wanda:0.5 sparsegpt:2:4 sparsegpt:0.5

Prints a table and JSON (``--out FILE`` also writes the JSON).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

from prunekit import PruneConfig, prune
from prunekit.models import load_skeleton
from prunekit.oneshot.residency import DiskOffload
from prunekit.store.manifest import build_manifest, write_json
from prunekit.store.save import write_streamed
from prunekit.store.shards import INDEX_FILE, ShardWriter
from prunekit.targets import find_blocks
from prunekit.timing import peak_rss_bytes

SHAPE_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
SHAPE_70B = {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 32000}


def write_random_model(folder: Path, shape: dict, seed: int = 0) -> int:
    """A float32 Llama checkpoint with N(0, 0.02²) weights and unit norms, one shard per block; bytes written."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**shape, tie_word_embeddings=False, dtype="float32")
    config.save_pretrained(folder)
    h, m, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    gen = torch.Generator().manual_seed(seed)

    def rand(*size):
        return torch.randn(*size, generator=gen) * 0.02

    writer = ShardWriter(folder, layers + 1)
    for i in range(layers):
        p = f"model.layers.{i}."
        writer.write({p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
                      p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
                      p + "mlp.gate_proj.weight": rand(m, h), p + "mlp.up_proj.weight": rand(m, h),
                      p + "mlp.down_proj.weight": rand(h, m), p + "input_layernorm.weight": torch.ones(h),
                      p + "post_attention_layernorm.weight": torch.ones(h)})
        print(f"\rwrote block {i + 1}/{layers}", end="", file=sys.stderr, flush=True)
    writer.write({"model.embed_tokens.weight": rand(shape["vocab_size"], h), "model.norm.weight": torch.ones(h),
                  "lm_head.weight": rand(shape["vocab_size"], h)})
    writer.finish()
    print(file=sys.stderr)
    return writer.total_size


class TimedOffload(DiskOffload):
    """``DiskOffload`` that records, per block, the seconds spent reading, between (calibrate + solve), writing."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.blocks: list[dict] = []
        self._t = 0.0

    def load(self, name, block):
        t0 = time.perf_counter()
        super().load(name, block)
        self._t = time.perf_counter()
        self.blocks.append({"block": name, "read_s": self._t - t0})

    def release(self, name, block, final):
        t0 = time.perf_counter()
        self.blocks[-1]["compute_s"] = t0 - self._t
        super().release(name, block, final)
        self.blocks[-1]["write_s"] = time.perf_counter() - t0


def run(folder: Path, out: Path, method: str, pattern: str, calib: torch.Tensor) -> dict:
    """Prune ``folder`` into ``out`` from disk; times per block, peak RSS, bytes written."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    model, _, _, reader = load_skeleton(str(folder), tokenizer=False)
    load_s = time.perf_counter() - t0
    config = PruneConfig(method=method, pattern=pattern) if ":" in pattern else PruneConfig(
        method=method, sparsity=float(pattern))
    writer = ShardWriter(out, len(find_blocks(model)[1]) + 1)
    residency = TimedOffload(reader, writer, torch.float32)
    result = prune(model, config, calib, residency=residency)
    write_streamed(model, writer)  # the peak since prune() started includes writing the last shard
    wall = time.perf_counter() - t0
    written = sum(f.stat().st_size for f in out.iterdir())
    blocks = residency.blocks
    mean = {k: sum(b[k] for b in blocks) / len(blocks) for k in ("read_s", "compute_s", "write_s")}
    return {"method": method, "pattern": pattern, "wall_s": round(wall, 1), "skeleton_s": round(load_s, 1),
            "prune_s": round(result.seconds, 1), "per_block_mean_s": {k: round(v, 2) for k, v in mean.items()},
            "per_block": [{k: round(v, 2) if isinstance(v, float) else v for k, v in b.items()} for b in blocks],
            "sparsity": round(result.sparsity, 4), "peak_rss_prune_mb": round(peak_rss_bytes() / 2**20),
            "rss_start_mb": result.info.get("rss_start_mb"), "memory_bound": result.info.get("memory_bound"),
            "peak_rss_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "bytes_written": written, "damping_escalations": result.damping_escalations,
            "calib_dtype": result.info.get("calib_dtype")}


def block_work(shape: dict) -> dict:
    """Per block: parameters, SparseGPT solve multiply-adds (Σ over layers of rows·cols² + cols³)."""
    h, m = shape["hidden_size"], shape["intermediate_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    layers = [(h, h), (kv, h), (kv, h), (h, h), (m, h), (m, h), (h, m)]  # (rows, cols): q k v o gate up down
    return {"params": sum(r * c for r, c in layers), "solve_madds": sum(r * c * c + c**3 for r, c in layers)}


def extrapolate(measured: dict, tokens: int) -> dict:
    """The 70B estimate from the 7B measurement: read and write scale with block bytes, Wanda's compute with
    parameters × tokens, SparseGPT's with the solve multiply-adds (its calibration is a small share)."""
    small, big = block_work(SHAPE_7B), block_work(SHAPE_70B)
    bytes_ratio = big["params"] / small["params"]
    compute_ratio = (big["solve_madds"] / small["solve_madds"] if measured["method"] == "sparsegpt" else bytes_ratio)
    per = measured["per_block_mean_s"]
    io = (per["read_s"] + per["write_s"]) * bytes_ratio
    compute = per["compute_s"] * compute_ratio
    blocks = SHAPE_70B["num_hidden_layers"]
    # 8 processes: Wanda's calibration splits 8 ways; SparseGPT's 7 layer solves are dealt round-robin, so its
    # block takes as long as its largest solve (down_proj: 8192 × 28672² + 28672³ multiply-adds).
    h, m = SHAPE_70B["hidden_size"], SHAPE_70B["intermediate_size"]
    largest = (h * m * m + m**3) / big["solve_madds"]
    compute8 = compute * (largest if measured["method"] == "sparsegpt" else 1 / 8)
    weights_gb = (big["params"] * blocks + 2 * SHAPE_70B["vocab_size"] * h) * 4 / 1e9
    return {"method": measured["method"], "pattern": measured["pattern"], "blocks": blocks,
            "hours_1_process": round(blocks * (io + compute) / 3600, 1),
            "hours_8_processes": round(blocks * (io + compute8) / 3600, 1),
            "disk_read_gb": round(weights_gb), "disk_written_gb": round(weights_gb),
            # embeddings + head, one block, down_proj's XᵀX (float32); SparseGPT's solve adds one (m, m) factor
            # and two (h, m) working copies. The masks (one bit per weight) are spilled to the output's disk.
            "resident_gb_per_process": round((2 * SHAPE_70B["vocab_size"] * h + big["params"] + m * m
                                              + (m * m + 2 * h * m if measured["method"] == "sparsegpt" else 0)) * 4
                                             / 1e9, 1),
            "mask_spill_gb": round(big["params"] * blocks / 8 / 1e9, 1),
            "calibration_tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="scratch folder (needs ~55 GB free: input + one output)")
    ap.add_argument("--extrapolate", metavar="REPORT", help="only recompute the 70B estimate from a saved --out")
    ap.add_argument("--runs", nargs="+", default=["wanda:2:4", "wanda:0.5", "sparsegpt:2:4", "sparsegpt:0.5"])
    ap.add_argument("--nsamples", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--keep", action="store_true", help="keep the input checkpoint")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.extrapolate:
        saved = json.loads(Path(args.extrapolate).read_text())["report"]
        tokens = int(saved["calibration"].split()[0]) * int(saved["calibration"].split()[2])
        print(json.dumps([extrapolate(r, tokens) for r in saved["runs"]], indent=2))
        return
    if not args.dir:
        ap.error("--dir is required")
    root = Path(args.dir)
    source = root / "llama-7b-shape"
    report: dict = {"shape": SHAPE_7B, "calibration": f"{args.nsamples} x {args.seqlen} random tokens", "runs": []}
    try:
        if not (source / INDEX_FILE).is_file():
            t0 = time.perf_counter()
            report["checkpoint_bytes"] = write_random_model(source, SHAPE_7B)
            report["write_checkpoint_s"] = round(time.perf_counter() - t0, 1)
        calib = torch.randint(0, SHAPE_7B["vocab_size"], (args.nsamples, args.seqlen),
                              generator=torch.Generator().manual_seed(0))
        for spec in args.runs:
            method, pattern = spec.split(":", 1)
            report["runs"].append(run(source, root / "out", method, pattern, calib))
            shutil.rmtree(root / "out", ignore_errors=True)
            print(json.dumps(report["runs"][-1] | {"per_block": "..."}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root / "out", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(source, ignore_errors=True)
    report["extrapolated_70b"] = [extrapolate(r, args.nsamples * args.seqlen) for r in report["runs"]]
    report = build_manifest(command=sys.argv, report=report)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print("\n| method | pattern | wall | per block: read / calibrate+solve / write | peak RSS (prune) | written |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in report["report"]["runs"]:
        p = r["per_block_mean_s"]
        print(f"| {r['method']} | {r['pattern']} | {r['wall_s']:.0f} s | {p['read_s']:.1f} / {p['compute_s']:.1f} / "
              f"{p['write_s']:.1f} s | {r['peak_rss_prune_mb']} MB ({r['peak_rss_process_mb']}) | "
              f"{r['bytes_written'] / 1e9:.1f} GB |")


if __name__ == "__main__":
    main()
