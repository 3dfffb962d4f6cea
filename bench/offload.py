"""In memory vs from disk (``--offload disk``) on the same model and calibration, alternately in one process:
pruning time (the streaming's overhead), peak RSS, and whether every output tensor is identical (SHA-256).

    .venv/bin/python bench/offload.py --method wanda --reps 2

Prints JSON and a table. Protocol P's calibration (C4, 32 × 2048, seed 0) by default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from prunekit import CalibConfig, PruneConfig, prune
from prunekit.data import load_text, sample_calibration
from prunekit.models import load_model, load_skeleton
from prunekit.oneshot.residency import DiskOffload
from prunekit.store.manifest import build_manifest, write_json
from prunekit.store.save import write_streamed
from prunekit.store.shards import CheckpointReader, ShardWriter
from prunekit.targets import find_blocks


def digests(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in tensors.items()}


def in_memory(path: str, config: PruneConfig, calib: torch.Tensor, scratch: Path) -> tuple[dict, dict]:
    model, _, _ = load_model(path)
    t0 = time.perf_counter()
    result = prune(model, config, calib, progress=False)
    shutil.rmtree(scratch / "mem", ignore_errors=True)
    model.save_pretrained(scratch / "mem")  # the disk path writes as it goes: compare like with like
    seconds = time.perf_counter() - t0
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(result.peak_rss_mb)}, digests(state)


def from_disk(path: str, config: PruneConfig, calib: torch.Tensor, scratch: Path) -> tuple[dict, dict]:
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    model, _, _, reader = load_skeleton(path, tokenizer=False)
    writer = ShardWriter(out, len(find_blocks(model)[1]) + 1)
    t0 = time.perf_counter()
    result = prune(model, config, calib, progress=False, residency=DiskOffload(reader, writer, torch.float32))
    write_streamed(model, writer)
    seconds = time.perf_counter() - t0  # includes writing every shard
    saved = CheckpointReader(out)
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(result.peak_rss_mb)}, digests(
        saved.read(saved.names(), torch.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--pattern", default="0.5", help="a sparsity or N:M")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from prunekit.models import resolve_model_path

    path = resolve_model_path(args.model)
    config = PruneConfig(method=args.method, pattern=args.pattern) if ":" in args.pattern else PruneConfig(
        method=args.method, sparsity=float(args.pattern))
    calib_cfg = CalibConfig("c4", args.nsamples, args.seqlen, 0)
    calib = sample_calibration(load_text("c4"), load_model(path)[1], calib_cfg)
    rows: dict[str, list] = {"memory": [], "disk": []}
    hashes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
        for _ in range(args.reps):  # alternately, so drift on the machine hits both alike
            row, hashes["memory"] = in_memory(path, config, calib, Path(scratch))
            rows["memory"].append(row)
            row, hashes["disk"] = from_disk(path, config, calib, Path(scratch))
            rows["disk"].append(row)
    same = hashes["memory"] == hashes["disk"]
    best = {k: min(r["seconds"] for r in v) for k, v in rows.items()}
    report = {"model": args.model, "method": args.method, "pattern": args.pattern,
              "calibration": f"c4 {args.nsamples} x {args.seqlen} seed 0", "runs": rows,
              "tensors": len(hashes["memory"]), "identical_sha256": same,
              "differing": sorted(k for k in hashes["memory"] if hashes["memory"][k] != hashes["disk"].get(k)),
              "overhead": round(best["disk"] / best["memory"] - 1, 4)}
    report = build_manifest(command=sys.argv, report=report)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print("\n| path | prune + write seconds (each rep) | peak RSS MB | identical tensors |")
    print("| --- | --- | --- | --- |")
    for k, v in rows.items():
        print(f"| {k} | {', '.join(str(r['seconds']) for r in v)} | {max(r['peak_rss_mb'] for r in v)} | "
              f"{report['report']['tensors'] - len(report['report']['differing'])}/{report['report']['tensors']} |")
    print(f"\nstreaming overhead (best of each): {report['report']['overhead']:+.1%}")


if __name__ == "__main__":
    main()
