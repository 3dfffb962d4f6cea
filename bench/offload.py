"""In memory vs from disk (``--offload disk``) on the same model and calibration, alternately in one process, each a
whole run as the CLI makes it (``prunekit.prune_run``): pruning time (the streaming's overhead), peak RSS, and
whether every output tensor is identical (SHA-256).

    .venv/bin/python bench/offload.py --method wanda --reps 2

Prints JSON and a table. Protocol P's calibration (C4, 32 × 2048, seed 0) by default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from prunekit import CalibConfig, PruneConfig, prune_run
from prunekit.store.manifest import build_manifest, write_json
from prunekit.store.shards import CheckpointReader


def digests(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in tensors.items()}


def run(model: str, config: PruneConfig, calib: CalibConfig, offload: str, out: Path) -> tuple[dict, dict]:
    """One whole run as the CLI makes it (``prune_run``): its pruning time (from disk: reading, calibrating,
    solving and writing every block), peak RSS and the SHA-256 of every tensor it wrote."""
    summary = prune_run(model, out, config, calib, offload=offload, overwrite=True)
    saved = CheckpointReader(out)
    return {"seconds": summary["prune_seconds"], "peak_rss_mb": round(summary["peak_rss_mb"])}, digests(
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
    config = PruneConfig(method=args.method, pattern=args.pattern) if ":" in args.pattern else PruneConfig(
        method=args.method, sparsity=float(args.pattern))
    calib = CalibConfig("c4", args.nsamples, args.seqlen, 0)
    rows: dict[str, list] = {"memory": [], "disk": []}
    hashes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
        for _ in range(args.reps):  # alternately, so drift on the machine hits both alike
            for where, offload in (("memory", "none"), ("disk", "disk")):
                row, hashes[where] = run(args.model, config, calib, offload, Path(scratch) / where)
                rows[where].append(row)
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
