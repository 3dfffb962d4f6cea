"""Data-parallel calibration vs one process, on the same machine, alternately: ``prunekit prune --workers K``
(K processes, one thread each, statistics all-reduced over gloo) against one process with K threads.
Reports pruning time, the bytes each block sends, how far the weights and masks differ (summation order
only), and the WikiText-2 perplexity of both outputs.

    .venv/bin/python bench/data_parallel.py --method wanda --workers 2 --reps 1

Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from prunekit.store.manifest import build_manifest, write_json
from prunekit.store.mask_file import load_masks
from prunekit.store.shards import CheckpointReader

PRUNEKIT = [sys.executable, "-m", "prunekit"]


def prune_run(out: Path, method: str, pattern: str, workers: int, nsamples: int, seqlen: int) -> dict:
    flag = ["--pattern", pattern] if ":" in pattern else ["--sparsity", pattern]
    env = os.environ | {"OMP_NUM_THREADS": str(os.cpu_count() // workers)}
    cmd = [*PRUNEKIT, "prune", "--model", "default", "--method", method, *flag, "--calib", "c4", "--nsamples",
           str(nsamples), "--seqlen", str(seqlen), "--workers", str(workers), "--out", str(out), "--overwrite"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    manifest = json.loads((out / "manifest.json").read_text())
    return {"workers": workers, "threads_each": int(env["OMP_NUM_THREADS"]), "prune_seconds": summary["prune_seconds"],
            "peak_rss_mb": summary["peak_rss_mb"], "processes": manifest["result"].get("processes")}


def perplexity(folder: Path) -> float:
    proc = subprocess.run([*PRUNEKIT, "eval", "--model", str(folder), "--data", "wikitext2", "--max-windows", "40",
                           "--out", str(folder / "eval.json")], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)["perplexity"]


def difference(a: Path, b: Path) -> dict:
    ra, rb = CheckpointReader(a), CheckpointReader(b)
    ta, tb = ra.read(ra.names(), torch.float32), rb.read(rb.names(), torch.float32)
    worst = max(float((ta[k] - tb[k]).abs().max()) for k in ta)
    rel = max(float((ta[k] - tb[k]).norm() / ta[k].norm().clamp_min(1e-30)) for k in ta)
    ma, mb = load_masks(a / "masks.safetensors"), load_masks(b / "masks.safetensors")
    flipped = sum(int((ma[k] != mb[k]).sum()) for k in ma)
    return {"max_abs_weight_diff": worst, "max_relative_tensor_diff": rel, "mask_entries_differing": flipped,
            "mask_entries": sum(m.numel() for m in ma.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--pattern", default="0.5")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
        one, many = Path(scratch) / "one", Path(scratch) / "many"
        for _ in range(args.reps):  # alternately
            runs.append(prune_run(one, args.method, args.pattern, 1, args.nsamples, args.seqlen))
            runs.append(prune_run(many, args.method, args.pattern, args.workers, args.nsamples, args.seqlen))
        diff = difference(one, many)
        ppl = {"one_process": perplexity(one), f"{args.workers}_processes": perplexity(many)}
    best = {w: min(r["prune_seconds"] for r in runs if r["workers"] == w) for w in (1, args.workers)}
    blocks = 30  # SmolLM2-135M
    sent = next(r["processes"]["bytes_sent_rank0"] for r in runs if r["workers"] == args.workers)
    report = {"method": args.method, "pattern": args.pattern, "runs": runs,
              "speedup": round(best[1] / best[args.workers], 3), "bytes_sent_rank0_per_block": sent // blocks,
              "difference": diff, "perplexity": ppl}
    report = build_manifest(command=sys.argv, report=report)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print("\n| processes × threads | prune seconds | peak RSS MB (rank 0) | perplexity |")
    print("| --- | --- | --- | --- |")
    for w, key in ((1, "one_process"), (args.workers, f"{args.workers}_processes")):
        r = [x for x in runs if x["workers"] == w]
        print(f"| {w} × {r[0]['threads_each']} | {', '.join(str(x['prune_seconds']) for x in r)} | "
              f"{r[0]['peak_rss_mb']} | {ppl[key]:.4f} |")


if __name__ == "__main__":
    main()
