"""Recovery at equal budget, one loss after another on the same pruned model (issue 29): plain cross-entropy against
distillation from the dense model (KD on logits, SquareHead: per-block normalized feature MSE + KD). Each run trains
the same windows of C4 (same seed, steps, batch, length and learning rate) and is evaluated on WikiText-2 test
(protocol P windows); R = (ppl_before − ppl_after) / (ppl_before − ppl_dense) is the recovered fraction.

    .venv/bin/python bench/recovery.py --out runs/recovery.json            # prunes SparseGPT 2:4 (protocol P) first
    .venv/bin/python bench/recovery.py --pruned runs/sgpt-24 --steps 100   # or starts from a pruned folder

Prints JSON and a table. Nothing else may run meanwhile if the seconds are to be read.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from prunekit.cli import main as cli
from prunekit.store.manifest import build_manifest, write_json


def _run(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv)
    if code:
        raise SystemExit(f"failed ({code}): prunekit {' '.join(argv)}")
    return json.loads(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pruned", default=None, help="a pruned folder of the default model (default: prune one now)")
    ap.add_argument("--losses", default="ce,kd,squarehead", help="comma-separated --loss values, run in turn")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-windows", type=int, default=40)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    evaluation = ["--eval", "wikitext2", "--eval-seqlen", "2048", "--max-windows", str(args.max_windows)]
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
        pruned = args.pruned
        start = None
        if pruned is None:
            pruned = str(Path(scratch) / "pruned")
            start = _run(["prune", "--model", "default", "--method", "sparsegpt", "--pattern", "2:4", "--calib", "c4",
                          "--nsamples", "32", "--seqlen", "2048", "--eval-dense", *evaluation, "--out", pruned])
        dense = start["ppl_dense"] if start else _run(["eval", "--model", "default", "--data", "wikitext2", "--seqlen",
                                                       "2048", "--max-windows", str(args.max_windows), "--out",
                                                       str(Path(scratch) / "dense.json")])["perplexity"]
        rows = []
        for loss in args.losses.split(","):
            summary = _run(["finetune", "--model", pruned, "--data", "c4", "--loss", loss, "--teacher", "default",
                            "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seqlen",
                            str(args.seqlen), "--lr", str(args.lr), *evaluation, "--out", str(Path(scratch) / loss)])
            before, after = summary["ppl_before"], summary["ppl_after"]
            rows.append({"loss": loss, "ppl_before": round(before, 2), "ppl_after": round(after, 2),
                         "recovered": round((before - after) / (before - dense), 3), "seconds": summary["seconds"],
                         "tokens": args.steps * args.batch_size * args.seqlen})
    report = build_manifest(command=sys.argv, dense_perplexity=round(dense, 2), budget={
        "steps": args.steps, "batch_size": args.batch_size, "seqlen": args.seqlen, "lr": args.lr,
        "train": "c4 (seed 0)", "eval": f"wikitext2 test, {args.max_windows} windows of 2048"}, runs=rows)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print(f"\ndense {dense:.2f}; {args.steps} steps x {args.batch_size} x {args.seqlen} tokens, lr {args.lr}\n")
    print("| loss | ppl before | ppl after | recovered R | train seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['loss']} | {r['ppl_before']} | {r['ppl_after']} | {r['recovered']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
