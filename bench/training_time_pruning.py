"""Training-time pruning evidence on scikit-learn digits (issue 4): lottery tickets vs the random
re-init control vs dense, and gradual vs one-shot magnitude pruning to the same sparsity.

    .venv/bin/python bench/training_time_pruning.py --out docs/training-time

Writes lottery.json, lottery.png, gradual_vs_oneshot.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prunekit.store.manifest import write_json
from prunekit.train.digits import DigitsSetup, plot_lottery, run_gradual_vs_oneshot, run_lottery


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/training-time")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = DigitsSetup(epochs=args.epochs)

    t0 = time.perf_counter()
    lottery = run_lottery(args.rounds, 0.2, args.seeds, 0, setup)
    lottery["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(lottery, out / "lottery.json")
    plot_lottery(lottery, out / "lottery.png")
    t0 = time.perf_counter()
    gradual = run_gradual_vs_oneshot(0.9, args.seeds, setup)
    gradual["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(gradual, out / "gradual_vs_oneshot.json")

    print("| round | sparsity | ticket (mean) | random re-init (mean) |\n| --- | --- | --- | --- |")
    runs = lottery["runs"]
    for r in range(len(runs[0])):
        ticket = sum(run[r]["ticket"] for run in runs) / len(runs)
        ctrl = [run[r]["random_reinit"] for run in runs if run[r]["random_reinit"] is not None]
        control = sum(ctrl) / len(ctrl) if ctrl else float("nan")
        print(f"| {r} | {runs[0][r]['sparsity']:.3f} | {ticket:.4f} | {control:.4f} |")
    print(json.dumps({"lottery_seconds": lottery["seconds"], "gradual_vs_oneshot": gradual}, indent=2))


if __name__ == "__main__":
    main()
