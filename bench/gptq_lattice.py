"""Why RTN beats GPTQ at int4 g128 on the default model: is it the Q4_1 lattice its weights come from?

SmolLM2-135M as shipped here is a dequantized Q4_1 GGUF: along each row, every block of 32 weights takes
at most 16 evenly spaced values. Round-to-nearest onto a 4-bit grid keeps much of that structure; GPTQ's
error compensation moves weights off it. The test: jitter every block-linear weight by Gaussian noise of
``--noise`` × its row's standard deviation (seeded; blurs the lattice and changes the model a little: its
dense perplexity is measured too), then run protocol P (C4 calibration 32 × 2048, WikiText-2 40 × 2048)
for dense, int4 g128 RTN and int4 g128 GPTQ on the jittered model (the shipped model's three figures are
bench/quant_quality.py's, from ``runs/quant-p/results.json`` when present: deterministic on CPU). If the
lattice is the reason, GPTQ beats RTN on the jittered model. Results append to a JSON file (a sweep resumes).

    .venv/bin/python bench/gptq_lattice.py [--noise 0.05] [--out runs/gptq-lattice]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
from sweep import PRUNEKIT, Results, drop_weights, quant_p_perplexities

from prunekit.models import load_model
from prunekit.targets import find_targets

G128 = ["--wbits", "4", "--groupsize", "128", "--uneven-groups"]
CALIB = ["--calib", "c4", "--nsamples", "32", "--seqlen", "2048"]
EVAL = ["--eval", "wikitext2", "--max-windows", "40"]
RUNS = {"dense": None, "int4 g128 rtn": ["--method", "rtn"],
        "int4 g128 gptq": ["--method", "gptq", "--no-act-order", "--grid", "minmax"]}  # as first run (session 12)


def jittered(folder: Path, noise: float, seed: int = 0) -> Path:
    """The default model with N(0, (noise · row std)²) added to every block-linear weight, saved once."""
    if not (folder / "config.json").is_file():
        model, tok, _ = load_model("default", torch.float32)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in find_targets(model).values():
                w = layer.weight
                w += noise * w.std(dim=1, keepdim=True) * torch.randn(w.shape, generator=g)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return folder


def run(model: str, name: str, out: Path) -> float:
    report = out / f"{name.replace(' ', '_')}.json"
    if RUNS[name] is None:
        cmd = [PRUNEKIT, "eval", "--model", model, "--data", "wikitext2", "--seqlen", "2048", "--max-windows", "40",
               "--out", str(report)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(report.read_text())["evaluation"]["perplexity"]
    folder = out / name.replace(" ", "_")
    cmd = [PRUNEKIT, "quantize", "--model", model, *G128, *RUNS[name], *CALIB, *EVAL, "--out", str(folder), "--overwrite"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ppl = json.loads((folder / "manifest.json").read_text())["summary"]["ppl_pruned"]
    drop_weights(folder)
    return ppl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--out", default="runs/gptq-lattice")
    args = ap.parse_args()
    out = Path(args.out)
    results = Results(out)
    results |= {f"shipped: {n}": ppl for n, ppl in quant_p_perplexities(RUNS).items()}
    models = {f"jittered {args.noise}": str(jittered(out / f"jittered-{args.noise}", args.noise))}
    for label, model in models.items():
        for name in RUNS:
            key = f"{label}: {name}"
            if key not in results:
                results[key] = run(model, name, out / label.split()[0])
                results.save()
    print("| model | dense | int4 g128 RTN | int4 g128 GPTQ |")
    print("| --- | --- | --- | --- |")
    for label in ["shipped", *models]:
        print(f"| {label} | " + " | ".join(f"{results.get(f'{label}: {n}', float('nan')):.2f}" for n in RUNS) + " |")


if __name__ == "__main__":
    main()
