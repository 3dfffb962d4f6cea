"""prunekit's GPTQ against llm-compressor's on the same configuration, paired over calibration seeds.

Both quantize the default model to int4, symmetric, groups of 64 (llm-compressor 0.14 cannot take groups of
128 on 576-wide inputs), with static activation order (llm-compressor's default; prunekit's ``--act-order``),
from the same C4 windows (32 × 2048, prunekit's sampler, seed s), and are scored by prunekit's evaluator on
protocol P's WikiText-2 windows (40 × 2048). One seed is one draw of the calibration sample: the table gives
each seed's pair and the spread of the ratio, so a gap is claimed only beside it.

    bash bench/llmcompressor/setup.sh                                # llm-compressor in a venv of its own
    .venv/bin/python bench/gptq_vs_llmc.py [--seeds 0 1 2] [--out runs/gptq-vs-llmc]

Runs one tool after the other per seed, each in its own process; results are appended to a JSON file, so an
interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from sweep import PRUNEKIT, Results, drop_weights

HERE = Path(__file__).parent
LLMC = [str(HERE / "llmcompressor/.venv/bin/python"), str(HERE / "llmcompressor/gptq_w4a16.py"), "--groupsize", "64"]
PRUNEKIT_GPTQ = ["quantize", "--model", "default", "--wbits", "4", "--groupsize", "64", "--sym", "--method", "gptq",
                 "--act-order", "--grid", "minmax", "--calib", "c4", "--nsamples", "32", "--seqlen", "2048",
                 "--eval", "wikitext2", "--eval-seqlen", "2048", "--max-windows", "40"]


def llm_compressor(seed: int, out: Path) -> float:
    report = out / f"llmc-seed{seed}.json"
    subprocess.run([*LLMC, "--seed", str(seed), "--out", str(report)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())["perplexity"]


def prunekit(seed: int, out: Path) -> float:
    folder = out / f"prunekit-seed{seed}"
    subprocess.run([PRUNEKIT, *PRUNEKIT_GPTQ, "--seed", str(seed), "--out", str(folder), "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)
    drop_weights(folder)
    return json.loads((folder / "manifest.json").read_text())["summary"]["ppl_pruned"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/gptq-vs-llmc")
    args = ap.parse_args()
    out = Path(args.out)
    results = Results(out)
    for seed in args.seeds:
        for tool, run in (("llm-compressor", llm_compressor), ("prunekit", prunekit)):
            key = f"{tool} seed {seed}"
            if key not in results:
                results[key] = run(seed, out)
                results.save()
    ratios = [results[f"prunekit seed {s}"] / results[f"llm-compressor seed {s}"] for s in args.seeds]
    print("| calibration seed | llm-compressor | prunekit | prunekit / llm-compressor |")
    print("| --- | --- | --- | --- |")
    for seed, ratio in zip(args.seeds, ratios, strict=True):
        print(f"| {seed} | {results[f'llm-compressor seed {seed}']:.2f} | {results[f'prunekit seed {seed}']:.2f} | "
              f"{ratio:.4f} |")
    summary = {"mean_ratio": statistics.mean(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
               "seeds": args.seeds}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
