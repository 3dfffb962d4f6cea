"""Zero-shot task scoring on the default model: speed, and agreement with lm-eval's own scorer (issue 16).

1. The run the issue sizes: the first --limit items of each of the five shared tasks (LAMBADA
   --lambada-limit), scored by prunekit (lm-eval's requests and metrics; each shared context run once),
   timed end to end.
2. Side by side on the first --compare-items items of each task, in one process, alternating: prunekit's
   scorer, the same scorer with every (context, choice) pair run whole, and lm-eval's own HFLM wrapped
   around the same model. Seconds and ratios.
3. Agreement: per item, acc and acc_norm of prunekit's scorer against HFLM's (same items, same model).

    .venv/bin/python bench/tasks.py [--limit 500] [--lambada-limit 1000] [--compare-items 100] \
        [--dtype float32|bfloat16] [--out runs/bench-tasks.json]

Needs the tasks extra (``pip install -e '.[tasks]'``; ``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prunekit.measure.hardware import cpu_info
from prunekit.measure.tasks import NAMED, evaluate_tasks, load_task, task_lm
from prunekit.models import load_model
from prunekit.settings import DTYPES
from prunekit.store.manifest import build_manifest, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--lambada-limit", type=int, default=1000)
    ap.add_argument("--compare-items", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", choices=DTYPES, default="float32", help="the model dtype (bfloat16: fast on AMX CPUs)")
    ap.add_argument("--out", default="runs/bench-tasks.json")
    args = ap.parse_args()
    from lm_eval.models.huggingface import HFLM

    model, tok, _ = load_model(args.model, DTYPES[args.dtype])
    full = [load_task(n, args.lambada_limit if n == "lambada_openai" else args.limit) for n in NAMED]
    t0 = time.perf_counter()
    result = evaluate_tasks(model, tok, full, args.batch_size)
    full_seconds = time.perf_counter() - t0
    requests = sum(len(t.docs) * (len(t.docs[0].get("choices", [0]))) for t in full)
    print(f"full run: {sum(len(t.docs) for t in full)} items, ~{requests} requests, {full_seconds:.1f} s", flush=True)

    subset = [load_task(n, args.compare_items) for n in NAMED]
    scorers = {"prunekit": lambda: task_lm(model, tok, args.batch_size),
               "prunekit_whole_pairs": lambda: task_lm(model, tok, args.batch_size, share=False),
               "lm_eval_hflm": lambda: HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size)}
    side: dict[str, dict] = {}
    for name, make in scorers.items():  # alternating is moot at one rep each: run back to back, quiet machine
        t = time.perf_counter()
        side[name] = {"result": evaluate_tasks(model, tok, subset, args.batch_size, lm=make())}
        side[name]["seconds"] = round(time.perf_counter() - t, 1)
        print(f"{name}: {side[name]['seconds']} s", flush=True)
    agreement = {}
    ours, theirs = side["prunekit"]["result"]["tasks"], side["lm_eval_hflm"]["result"]["tasks"]
    for task in ours:
        pairs = {m: zip(ours[task]["per_item"][m], theirs[task]["per_item"][m], strict=True) for m in ours[task]["per_item"]}
        agreement[task] = {m: sum(a != b for a, b in pair) for m, pair in pairs.items()}
    seconds = {k: v["seconds"] for k, v in side.items()}
    report = {
        "machine": cpu_info(), "model": args.model, "dtype": args.dtype, "batch_size": args.batch_size,
        "full": {"seconds": round(full_seconds, 1), "tasks": {n: {k: t.get(k) for k in
                 ("items", "acc", "acc_ci", "acc_norm", "acc_norm_ci", "chance", "signal", "perplexity")}
                 for n, t in result["tasks"].items()}},
        "side_by_side": {"items_per_task": args.compare_items,
                         "seconds": seconds,
                         "speedup_vs_hflm": round(seconds["lm_eval_hflm"] / seconds["prunekit"], 2),
                         "speedup_vs_whole_pairs": round(seconds["prunekit_whole_pairs"] / seconds["prunekit"], 2)},
        "disagreements_with_hflm": agreement,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(build_manifest(command=sys.argv, report=report), args.out)
    print("\n| task | items | acc | 95% interval | acc_norm | chance | items differing from HFLM (acc / acc_norm) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, t in report["full"]["tasks"].items():
        norm = f"{t['acc_norm']:.3f}" if t["acc_norm"] is not None else "–"
        chance = f"{t['chance']:.2f}" if t["chance"] is not None else "–"
        differ = " / ".join(str(v) for v in agreement[n].values())
        print(f"| {n} | {t['items']} | {t['acc']:.3f} | {t['acc_ci'][0]:.3f}–{t['acc_ci'][1]:.3f} | {norm} | {chance} "
              f"| {differ} (of {args.compare_items}) |")
    s = report["side_by_side"]
    print(f"\nfull run {report['full']['seconds']} s; on {args.compare_items} items per task: prunekit "
          f"{s['seconds']['prunekit']} s, whole pairs {s['seconds']['prunekit_whole_pairs']} s, lm-eval HFLM "
          f"{s['seconds']['lm_eval_hflm']} s ({s['speedup_vs_hflm']}x vs HFLM). JSON: {args.out}")


if __name__ == "__main__":
    main()
