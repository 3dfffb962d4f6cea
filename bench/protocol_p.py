"""Protocol P from issue 3: prune SmolLM2-135M with each method × pattern, evaluate WikiText-2.

Calibration: c4, 32 samples × 2048 tokens, seed 0 (concatenated stream). Evaluation: wikitext2,
seqlen 2048, first 40 windows. Each run is its own process (clean peak memory); results are appended
to a JSON file so an interrupted sweep resumes. Prints a Markdown table and the JSON path.

    .venv/bin/python bench/protocol_p.py --runs magnitude:unstructured:0.5 wanda:2:4 ... [--out runs/p]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from sweep import PRUNEKIT, Results, drop_weights

DEFAULT_RUNS = [
    f"{m}:{p}" for m in ("magnitude", "wanda", "sparsegpt") for p in ("0.5", "2:4", "0.7")
] + [f"{m}:0.7:owl" for m in ("magnitude", "wanda", "sparsegpt")]


def parse(run: str) -> dict:
    """'wanda:2:4' / 'sparsegpt:0.7:owl' -> CLI arguments."""
    parts = run.split(":")
    method, rest = parts[0], parts[1:]
    allocation = "owl" if rest and rest[-1] == "owl" else "uniform"
    rest = [r for r in rest if r != "owl"]
    if len(rest) == 2:
        return {"method": method, "pattern": ":".join(rest), "sparsity": "0.5", "allocation": allocation}
    return {"method": method, "pattern": "unstructured", "sparsity": rest[0], "allocation": allocation}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="*", default=DEFAULT_RUNS)
    ap.add_argument("--out", default="runs/protocol-p")
    ap.add_argument("--nsamples", default="32")
    ap.add_argument("--max-windows", default="40")
    ap.add_argument("--extra", default="", help="extra CLI arguments for every run")
    args = ap.parse_args()
    out = Path(args.out)
    results = Results(out)
    for run in args.runs:
        key = run + (f" {args.extra}" if args.extra else "")
        if key in results:
            continue
        spec = parse(run)
        folder = out / key.replace(":", "_").replace(" ", "").replace("-", "")
        cmd = [PRUNEKIT, "prune", "--model", "default", "--method", spec["method"], "--sparsity", spec["sparsity"],
               "--pattern", spec["pattern"], "--allocation", spec["allocation"], "--calib", "c4",
               "--nsamples", args.nsamples, "--seqlen", "2048", "--seed", "0", "--eval", "wikitext2",
               "--eval-seqlen", "2048", "--max-windows", args.max_windows, "--out", str(folder), "--overwrite",
               *args.extra.split()]
        subprocess.run(cmd, check=True)
        manifest = json.loads((folder / "manifest.json").read_text())
        results[key] = manifest["summary"] | {
            "damping_escalations": manifest["result"]["damping_escalations"],
            "solve_seconds": manifest["result"].get("solve_seconds"),
            "block_sparsity": manifest["result"]["block_sparsity"],
        }
        results.save()
        drop_weights(folder)
    print("| run | sparsity | perplexity | prune s | solve s | RSS at start MB | peak RSS MB | bound MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, r in results.items():
        print(f"| {key} | {r['sparsity']:.4f} | {r['ppl_pruned']:.2f} | {r['prune_seconds']:.0f} | "
              f"{r.get('solve_seconds')} | {r.get('rss_at_start_mb', '–')} | {r['peak_rss_mb']:.0f} | "
              f"{r.get('memory_bound_mb') or '–'} |")
    print(results.path)


if __name__ == "__main__":
    main()
