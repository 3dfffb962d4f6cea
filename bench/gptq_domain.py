"""Why RTN beats GPTQ at int4 g128 on the default model, the other suspect: calibrating on C4 and evaluating on
WikiText-2 (issue 17's anchors note it for the original code too).

The test: GPTQ int4 g128, in column order and in activation order, calibrated in-domain on WikiText-2 test
text the evaluation never reads (the tokens after the first 40 windows of 2048 that protocol P scores, less a
window's margin: about 220k tokens), 32 windows of 2048 from seed 0, scored on protocol P's 40 windows. RTN needs
no calibration, so its figure stands; the C4 figures are bench/quant_quality.py's (``runs/quant-p/results.json``,
deterministic on CPU). If the domain is the reason, in-domain GPTQ beats RTN. The held-out text is written to the
system's temporary folder.

    .venv/bin/python bench/gptq_domain.py [--out runs/gptq-domain]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from sweep import PRUNEKIT, Results, drop_weights, quant_p_perplexities

from prunekit.data import encode, load_text
from prunekit.models import load_model

SEQLEN, WINDOWS = 2048, 40
GPTQ = ["quantize", "--model", "default", "--wbits", "4", "--groupsize", "128", "--uneven-groups", "--method", "gptq",
        "--grid", "minmax", "--nsamples", "32", "--seqlen", "2048", "--seed", "0", "--eval", "wikitext2",
        "--max-windows", str(WINDOWS)]


def held_out_text() -> Path:
    """WikiText-2 test past the evaluated windows (plus one window of margin), as a .txt file."""
    _, tok, _ = load_model("default")
    ids = encode(tok, load_text("wikitext2").text)
    path = Path(tempfile.gettempdir()) / "prunekit-wikitext2-test-heldout.txt"
    path.write_text(tok.decode(ids[(WINDOWS + 1) * SEQLEN :]))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gptq-domain")
    args = ap.parse_args()
    out = Path(args.out)
    results = Results(out)
    names = {"int4 g128 rtn": "RTN (no calibration)", "int4 g128 gptq": "GPTQ column order, C4 calibration",
             "int4 g128 gptq act-order": "GPTQ activation order, C4 calibration"}
    results |= {names[n]: ppl for n, ppl in quant_p_perplexities(names).items()}
    for order in ("column", "activation"):
        key = f"GPTQ {order} order, WikiText-2 held-out calibration"
        if key not in results:
            folder = out / f"gptq-{order}-wikitext-heldout"
            flag = "--act-order" if order == "activation" else "--no-act-order"
            subprocess.run([PRUNEKIT, *GPTQ, flag, "--calib", str(held_out_text()), "--out", str(folder), "--overwrite"],
                           check=True, stdout=subprocess.DEVNULL)
            results[key] = json.loads((folder / "manifest.json").read_text())["summary"]["ppl_pruned"]
            drop_weights(folder)
            results.save()
    print("| int4 g128 | WikiText-2 perplexity (protocol P windows) |")
    print("| --- | --- |")
    for label, ppl in results.items():
        print(f"| {label} | {ppl:.2f} |")


if __name__ == "__main__":
    main()
