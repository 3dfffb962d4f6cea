"""The seed's claim, measured (issue 30): does compression hurt arithmetic, code, retrieval and multi-step
reasoning more than the commonsense tasks? Runs ``prunekit check`` on the dense default model once, then on each
compressed folder paired with it on the same items, and tabulates per category the change relative to the
category's dense score (accuracy, and per-token loss of the reference answers).

    .venv/bin/python bench/shipping_claim.py --models runs/wanda-50,runs/sgpt-24 --out runs/claim   # quick budget
    .venv/bin/python bench/shipping_claim.py --models ... --dense runs/check-default/check.json --out runs/claim --reuse

Prints JSON and a table. A category whose dense accuracy interval reaches down to the budget is marked: no signal.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

from prunekit.cli import main as cli
from prunekit.store.manifest import build_manifest, write_json


def _check(argv: list[str]) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv)
    if code not in (0, 3):
        raise SystemExit(f"failed ({code}): prunekit {' '.join(argv)}")
    return code, json.loads(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated compressed folders of the default model")
    ap.add_argument("--budget", default="quick", choices=("quick", "full"))
    ap.add_argument("--dense", default=None, help="a dense check.json already made with this budget (else run it)")
    ap.add_argument("--out", required=True, help="folder for each check and claim.json")
    ap.add_argument("--reuse", action="store_true", help="take a model's check.json already in --out when it was made "
                    "with this budget against this dense baseline (else run the check)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dense = args.dense
    if dense is None:
        dense = str(out / "dense" / "check.json")
        _check(["check", "--model", "default", "--budget", args.budget, "--out", str(out / "dense"), "--overwrite"])
    rows = []
    for model in args.models.split(","):
        folder = out / Path(model).name
        earlier = json.loads((folder / "check.json").read_text()) if (folder / "check.json").is_file() else {}
        if args.reuse and earlier.get("budget") == args.budget and earlier.get("baseline") == dense:
            gated = earlier["gate"]
            code = 3 if any(e["fails"] for e in gated.values()) else 0
        else:
            code, _ = _check(["check", "--model", model, "--baseline", dense, "--budget", args.budget, "--out",
                              str(folder), "--overwrite"])
            gated = json.loads((folder / "check.json").read_text())["gate"]
        for category, entry in gated.items():
            row = {"model": Path(model).name, "category": category, "fails": entry["fails"]}
            if "acc" in entry:
                acc, scores = entry["acc"], entry.get("scores")
                row |= {"acc_dense": scores and round(scores[0], 4), "acc": scores and round(scores[1], 4),
                        "acc_change_pt": round(100 * acc["diff"], 2), "acc_ci_pt": [round(100 * c, 2) for c in acc["ci"]],
                        "acc_relative": round(acc["diff"] / scores[0], 3) if scores and scores[0] else None,
                        "acc_signal": acc["signal"]}
            if "loss" in entry:
                loss = entry["loss"]
                row |= {"loss_relative": round(loss["relative"], 4),
                        "loss_ci_relative": [round(c / loss["reference"], 4) for c in loss["ci"]]}
            rows.append(row)
        print(json.dumps({"model": model, "exit": code}), file=sys.stderr)
    report = build_manifest(command=sys.argv, budget=args.budget, dense=dense, rows=rows)
    write_json(report, out / "claim.json")
    print(json.dumps(report, indent=2))
    print("\n| model | category | dense acc | acc | change (pt) [95% CI] | relative to dense | loss change [95% CI] | "
          "fails |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        acc = (f"{r['acc_change_pt']:+.1f} [{r['acc_ci_pt'][0]:+.1f}, {r['acc_ci_pt'][1]:+.1f}]"
               + ("" if r["acc_signal"] else " no signal")) if "acc_change_pt" in r else ""
        rel = f"{100 * r['acc_relative']:+.0f}%" if r.get("acc_relative") is not None else ""
        loss = (f"{100 * r['loss_relative']:+.1f}% [{100 * r['loss_ci_relative'][0]:+.1f}, "
                f"{100 * r['loss_ci_relative'][1]:+.1f}]") if "loss_relative" in r else ""
        print(f"| {r['model']} | {r['category']} | {r.get('acc_dense', '')} | {r.get('acc', '')} | {acc} | {rel} | "
              f"{loss} | {r['fails']} |")


if __name__ == "__main__":
    main()
