"""Block-wise reconstruction, one block at a time (issue 29): how far training a pruned block toward the dense
block's outputs goes, per learning rate and epoch, on calibration windows it was not trained on; and how much of the
pruned model's output error at that block is the block's own (dense inputs) rather than inherited from the blocks
before it (pruned inputs), which no training of this block can remove.

    .venv/bin/python bench/block_reconstruction.py --pruned runs/sgpt-24 --blocks 0,8,20 --lrs 1e-4,3e-4,1e-3

Prints JSON and a table. Nothing else may run meanwhile if the seconds are to be read.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

from prunekit.data import CalibConfig, load_text, sample_calibration
from prunekit.models import load_model
from prunekit.oneshot.calibrate import BlockInputs, capture_inputs, run_block
from prunekit.oneshot.config import RecoverConfig
from prunekit.oneshot.reconstruct import reconstruct_block, relative_error
from prunekit.store.manifest import build_manifest, write_json
from prunekit.targets import block_targets, find_blocks, find_targets, weight_view


def _split(inputs: BlockInputs, k: int) -> tuple[BlockInputs, BlockInputs]:
    return (BlockInputs(inputs.hidden[:k], inputs.args[:k], inputs.kwargs[:k]),
            BlockInputs(inputs.hidden[k:], inputs.args[k:], inputs.kwargs[k:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pruned", required=True, help="a pruned folder of the default model")
    ap.add_argument("--blocks", default="0,8,20")
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=16, help="training windows of 2048 (C4, seed 0)")
    ap.add_argument("--held-out", type=int, default=8, help="further windows the error is measured on")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    student, tok, _ = load_model(args.pruned)
    teacher = load_model("default")[0]
    windows = sample_calibration(load_text("c4"), tok, CalibConfig("c4", args.train + args.held_out, 2048, 0))
    name, blocks = find_blocks(student)
    dense_blocks = find_blocks(teacher)[1]
    targets = find_targets(student)
    xs = capture_inputs(student, blocks[0], windows, 1)
    xt = capture_inputs(teacher, dense_blocks[0], windows, 1)
    wanted_blocks = sorted(int(b) for b in args.blocks.split(","))
    rows = []
    for i in range(wanted_blocks[-1] + 1):
        if i in wanted_blocks:
            wanted = run_block(dense_blocks[i], xt).hidden
            own = relative_error(blocks[i], xt, wanted)  # the pruned block on dense inputs: its own error
            train_in, test_in = _split(xs, args.train)
            train_out, test_out = wanted[: args.train], wanted[args.train :]
            local = block_targets(blocks[i], f"{name}.{i}", targets)
            keep = {n: weight_view(t) != 0 for n, t in local.items()}
            before = relative_error(blocks[i], test_in, test_out)
            for lr in (float(x) for x in args.lrs.split(",")):
                block = copy.deepcopy(blocks[i])
                here = {n: block.get_submodule(n.removeprefix(f"{name}.{i}.")) for n in local}
                t0 = time.perf_counter()
                reconstruct_block(block, here, keep, train_in, train_out,
                                  RecoverConfig(recover="block", recover_epochs=args.epochs, recover_lr=lr), seed=i)
                seconds = time.perf_counter() - t0
                after = relative_error(block, test_in, test_out)
                rows.append({"block": i, "lr": lr, "epochs": args.epochs, "own_error": round(own, 5),
                             "held_out_before": round(before, 5), "held_out_after": round(after, 5),
                             "reduction": round(1 - after / before, 4), "seconds": round(seconds, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr)
        xs = run_block(blocks[i], xs, inplace=True)
        xt = run_block(dense_blocks[i], xt, inplace=True)
    report = build_manifest(command=sys.argv, train_windows=args.train, held_out_windows=args.held_out, rows=rows)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print("\n| block | lr | epochs | own error (dense inputs) | held-out error before | after | reduction | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['block']} | {r['lr']:g} | {r['epochs']} | {r['own_error']} | {r['held_out_before']} | "
              f"{r['held_out_after']} | {100 * r['reduction']:.1f}% | {r['seconds']} |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
