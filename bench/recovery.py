"""Recovery recipes at a stated budget on one pruned model (issue 29): end-to-end fine-tuning with plain
cross-entropy, distillation (KD on logits, SquareHead), block-wise reconstruction against the dense blocks (inputs
from the pruned stream or the dense one), and sequences of them (``block+kd``). Training text is the first 900
documents of the C4 sample; quality is perplexity on WikiText-2 test (protocol P windows) and on the last 100 C4
documents (held out: no recipe trains on them), each as R = (ppl_before − ppl_after) / (ppl_before − ppl_dense).

    .venv/bin/python bench/recovery.py --out runs/recovery.json                 # prunes SparseGPT 2:4 (protocol P)
    .venv/bin/python bench/recovery.py --pruned runs/sgpt-24 --recipes block,kd  # or starts from a pruned folder
    .venv/bin/python bench/recovery.py --pruned runs/sgpt-24 --recipes kd --chunks 4 --out runs/kd-curve.json

``--chunks N`` runs a recipe's last stage N times in a row (chunk k on fresh windows: seed k; the optimizer restarts
each chunk) and evaluates after each: the curve of R against training seconds and tokens (and a PNG beside --out).

Prints JSON and a table; the seconds are training time only. Nothing else may run meanwhile if they are to be read.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

from prunekit.cli import main as cli
from prunekit.data import load_text
from prunekit.store.manifest import build_manifest, write_json

HELD_OUT = 100  # the last documents of the C4 sample, never trained on


def _run(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv)
    if code:
        raise SystemExit(f"failed ({code}): prunekit {' '.join(argv)}")
    return json.loads(out.getvalue())


def _split_c4(folder: Path) -> tuple[str, str]:
    """The C4 sample as two .jsonl files: training documents and the held-out ones."""
    docs = load_text("c4").documents
    paths = []
    for name, part in (("c4-train.jsonl", docs[:-HELD_OUT]), ("c4-heldout.jsonl", docs[-HELD_OUT:])):
        path = folder / name
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
        paths.append(str(path))
    return paths[0], paths[1]


def _ppl(model: str, text: str, windows: int, scratch: Path, tag: str) -> float:
    return _run(["eval", "--model", model, "--data", text, "--seqlen", "2048", "--max-windows", str(windows),
                 "--out", str(scratch / f"eval-{tag}.json")])["perplexity"]


def _stage(stage: str, model: str, out: str, args, train_text: str, seed: int = 0) -> dict:
    """One recovery stage: ``block`` / ``block-teacher`` (reconstruction) or a ``--loss`` of finetune."""
    if stage.startswith("block"):
        stream = "teacher" if stage == "block-teacher" else "student"
        return _run(["recover", "--model", model, "--teacher", "default", "--calib", train_text, "--nsamples",
                     str(args.block_nsamples), "--seqlen", "2048", "--seed", str(seed), "--recover-epochs",
                     str(args.block_epochs), "--recover-lr", str(args.block_lr), "--recover-stream", stream,
                     "--out", out]) | {
            "tokens": args.block_nsamples * 2048 * args.block_epochs}
    loss, _, trainable = stage.partition("@")  # kd@norms: train the normalization weights and biases only
    return _run(["finetune", "--model", model, "--data", train_text, "--loss", loss, "--teacher", "default",
                 "--trainable", trainable or "all",
                 "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seqlen", str(args.seqlen),
                 "--lr", str(args.lr), "--seed", str(seed), "--out", out]) | {
        "tokens": args.steps * args.batch_size * args.seqlen}


def _recovered(before: float, after: float, dense: float) -> float:
    return round((before - after) / (before - dense), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pruned", default=None, help="a pruned folder of the default model (default: prune one now)")
    ap.add_argument("--recipes", default="ce,kd,squarehead,block,block-teacher,block+kd",
                    help="comma-separated; each a '+'-joined sequence of stages: block, block-teacher, or a --loss "
                    "(LOSS@norms: train only the normalization weights and biases)")
    ap.add_argument("--steps", type=int, default=40, help="finetune stages: optimizer steps")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--block-nsamples", type=int, default=32, help="block stages: calibration windows of 2048")
    ap.add_argument("--block-epochs", type=int, default=1)
    ap.add_argument("--block-lr", type=float, default=1e-3)
    ap.add_argument("--chunks", type=int, default=1, help="run each recipe's last stage this many times, evaluating "
                    "after each (a curve)")
    ap.add_argument("--max-windows", type=int, default=10, help="perplexity windows of 2048 on each text")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--keep", default=None, help="copy each recipe's last model into this folder (else it is deleted)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        scratch = Path(tmp)
        train_text, held_out = _split_c4(scratch)
        texts = {"wikitext2": "wikitext2", "c4_heldout": held_out}
        pruned = args.pruned
        if pruned is None:
            pruned = str(scratch / "pruned")
            _run(["prune", "--model", "default", "--method", "sparsegpt", "--pattern", "2:4", "--calib", "c4",
                  "--nsamples", "32", "--seqlen", "2048", "--out", pruned])
        dense = {k: _ppl("default", t, args.max_windows, scratch, f"dense-{k}") for k, t in texts.items()}
        before = {k: _ppl(pruned, t, args.max_windows, scratch, f"pruned-{k}") for k, t in texts.items()}
        rows = []
        for recipe in args.recipes.split(","):
            model, seconds, tokens = pruned, 0.0, 0
            stages = recipe.split("+")
            stages += [stages[-1]] * (args.chunks - 1)
            first = len(stages) - args.chunks  # the first run of the repeated stage: evaluated from there on
            for k, stage in enumerate(stages):
                out = str(scratch / f"{recipe}-{k}")
                chunk = max(0, k - first)
                summary = _stage(stage, model, out, args, train_text, seed=chunk)
                model, seconds, tokens = out, seconds + summary["seconds"], tokens + summary["tokens"]
                if k < first:
                    continue
                after = {t: _ppl(model, text, args.max_windows, scratch, f"{recipe}-{k}-{t}") for t, text in texts.items()}
                rows.append({"recipe": recipe, "chunk": chunk + 1, "seconds": round(seconds, 1), "tokens": tokens,
                             **{f"ppl_{t}": round(after[t], 2) for t in texts},
                             **{f"R_{t}": _recovered(before[t], after[t], dense[t]) for t in texts}})
                print(json.dumps(rows[-1]), file=sys.stderr)
            if args.keep:
                shutil.copytree(model, Path(args.keep) / recipe.replace("+", "_").replace("@", "_"), dirs_exist_ok=True)
    report = build_manifest(command=sys.argv, dense={k: round(v, 2) for k, v in dense.items()},
                            before={k: round(v, 2) for k, v in before.items()}, budget=vars(args), runs=rows)
    if args.out:
        write_json(report, args.out)
        _plot(rows, Path(args.out).with_suffix(".png"))
    print(json.dumps(report, indent=2))
    print(f"\ndense {dense}; before {before}\n")
    print("| recipe | chunk | train seconds | tokens | ppl WikiText-2 | R WikiText-2 | ppl C4 held out | R C4 held out |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['recipe']} | {r['chunk']} | {r['seconds']} | {r['tokens']} | {r['ppl_wikitext2']} | "
              f"{r['R_wikitext2']} | {r['ppl_c4_heldout']} | {r['R_c4_heldout']} |")


def _plot(rows: list[dict], path: Path) -> None:
    """R on each text against training minutes, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe]
        for text, style in (("wikitext2", "o-"), ("c4_heldout", "s--")):
            ax.plot([0] + [r["seconds"] / 60 for r in mine], [0] + [r[f"R_{text}"] for r in mine], style,
                    label=f"{recipe}, {text}")
    ax.axhline(0.7, color="gray", linewidth=0.8, linestyle=":", label="goal R = 0.7")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("recovered fraction R")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
