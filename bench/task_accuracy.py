"""Perplexity and zero-shot task accuracy of the default model, dense and pruned, each pruned model paired
with dense on the same items (issue 16's table).

Every run is one CLI command, as a user would type it (protocol P: C4 32 × 2048 calibration, seed 0;
WikiText-2, first 40 windows of 2048):

    prunekit eval  --model default --data wikitext2 --max-windows 40 --tasks T --out DIR/dense.json
    prunekit prune --model default <variant> ... --eval wikitext2 --max-windows 40 --tasks T \
                   --baseline DIR/dense.json --out DIR/<variant>

T is the five shared tasks, --limit items each (LAMBADA --lambada-limit). Finished runs are kept, so an
interrupted sweep resumes. Prints a Markdown table and writes DIR/results.json.

    .venv/bin/python bench/task_accuracy.py [--out runs/task-accuracy] [--limit 500] [--lambada-limit 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "wanda 50%": "--method wanda --sparsity 0.5",
    "wanda 2:4": "--method wanda --pattern 2:4",
    "sparsegpt 50%": "--method sparsegpt --sparsity 0.5",
    "sparsegpt 2:4": "--method sparsegpt --pattern 2:4",
    "sparsegpt + OWL + ADMM 70%": "--method sparsegpt --sparsity 0.7 --allocation owl --sequential sublayer --refine admm",
}
TASKS = ("piqa", "arc_easy", "hellaswag", "openbookqa", "lambada_openai")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/task-accuracy")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--lambada-limit", type=int, default=1000)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prunekit = str(Path(sys.executable).with_name("prunekit"))
    tasks = ["--tasks", ",".join(f"{t}:{args.lambada_limit}" if t == "lambada_openai" else t for t in TASKS),
             "--limit", str(args.limit)]
    text = ["--max-windows", "40"]
    dense = out / "dense.json"
    if not dense.exists():
        subprocess.run([prunekit, "eval", "--model", "default", "--data", "wikitext2", "--seqlen", "2048", *text, *tasks,
                        "--out", str(dense)], check=True)
    rows = {"dense": json.loads(dense.read_text())}
    for name in args.variants:
        folder = out / name.replace(" ", "").replace("%", "").replace(":", "_").replace("+", "-")
        if not (folder / "manifest.json").exists():
            subprocess.run([prunekit, "prune", "--model", "default", *VARIANTS[name].split(), "--calib", "c4",
                            "--nsamples", "32", "--seqlen", "2048", "--seed", "0", "--eval", "wikitext2",
                            "--eval-seqlen", "2048", *text, *tasks, "--baseline", str(dense), "--out", str(folder),
                            "--overwrite"], check=True)
        rows[name] = json.loads((folder / "manifest.json").read_text()) | {
            "tasks_full": json.loads((folder / "tasks.json").read_text())}
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))


def _cell(task: dict, paired: dict | None) -> str:
    acc, (lo, hi) = task["acc"], task["acc_ci"]
    text = f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    if paired:
        p = paired["acc"]
        lo, hi = p["ci"]
        text += f"<br>{100 * p['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] p={p['p_value']:.2g} {p['verdict']}"
    return text


def table(rows: dict) -> str:
    lines = ["| model | WikiText-2 ppl | " + " | ".join(TASKS) + " | mean acc |",
             "| --- | --- | " + " | ".join("---" for _ in TASKS) + " | --- |"]
    for name, row in rows.items():
        if name == "dense":
            ppl, scores, paired = row["evaluation"]["perplexity"], row["tasks"], None
        else:
            ppl, scores = row["evaluation"]["pruned"]["perplexity"], row["tasks_full"]["saved"]
            paired = row["tasks_full"].get("paired")
        cells = [_cell(scores["tasks"][t], paired and paired.get(t)) for t in TASKS]
        lines.append(f"| {name} | {ppl:.2f} | " + " | ".join(cells) + f" | {100 * scores['mean_acc']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
