"""Digest of what a fixed set of CLI runs writes, to show a refactor changed no output.

Runs prune (unstructured and 2:4), quantize (RTN and GPTQ), prune + quantize in each order, export and info
on a tiny random Llama (and, with ``--real``, a few on the default model with a small budget), and records
per run the SHA-256 of every output file except the manifest, plus the manifest's deterministic fields
(config, per-layer sparsity and error, effective bits, perplexities). Timings, paths and versions are left
out. Compare two digests (e.g. before and after a refactor) with ``--against``:

    .venv/bin/python scripts/output_digest.py --save /tmp/before.json [--real]
    ... change the code ...
    .venv/bin/python scripts/output_digest.py --against /tmp/before.json [--real]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

from prunekit.cli import main as cli

TINY_RUNS = {
    "wanda-50": ["prune", "--method", "wanda", "--sparsity", "0.5"],
    "sparsegpt-2:4": ["prune", "--method", "sparsegpt", "--pattern", "2:4"],
    "sparsegpt-2:4-admm-sublayer": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--refine", "admm",
                                    "--sequential", "sublayer"],
    "magnitude-global-60": ["prune", "--method", "magnitude", "--sparsity", "0.6", "--scope", "global"],
    "wanda-owl-70": ["prune", "--method", "wanda", "--sparsity", "0.7", "--allocation", "owl"],
    "quantize-rtn-4-g64": ["quantize", "--wbits", "4", "--groupsize", "64", "--method", "rtn"],
    "quantize-gptq-4-g64": ["quantize", "--wbits", "4", "--groupsize", "64", "--method", "gptq"],
    "quantize-gptq-8-row": ["quantize", "--wbits", "8", "--method", "gptq", "--sym"],
    "2:4-int4-prune-first": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--wbits", "4", "--groupsize", "64"],
    "2:4-int4-quant-first": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--wbits", "4", "--groupsize", "64",
                             "--order", "quant-first"],
    "2:4-int4-joint": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--wbits", "4", "--groupsize", "64",
                       "--order", "joint"],
    "wanda-50-int8-rtn": ["prune", "--method", "wanda", "--sparsity", "0.5", "--wbits", "8", "--quant-method", "rtn"],
}
EXPORTS = {  # run -> formats exported from its folder
    "wanda-50": ["auto", "bitmask", "csr"], "sparsegpt-2:4": ["auto", "nm"], "quantize-rtn-4-g64": ["auto"],
    "2:4-int4-prune-first": ["auto", "nm", "bitmask"], "wanda-50-int8-rtn": ["auto"],
}
REAL_RUNS = {
    "real-wanda-50": ["prune", "--method", "wanda", "--sparsity", "0.5"],
    "real-sparsegpt-2:4-int4": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--wbits", "4",
                                "--groupsize", "128", "--uneven-groups"],
    "real-quantize-rtn-4": ["quantize", "--wbits", "4", "--groupsize", "128", "--uneven-groups", "--method", "rtn"],
}
VOLATILE = {"seconds", "solve_seconds", "peak_rss_mb", "rss_start_mb", "memory_bound", "prune_seconds",
            "rss_at_start_mb", "memory_bound_mb", "out", "wall_seconds", "path", "model"}


def _tiny_model(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)


def _text(folder: Path) -> Path:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing".split()
    gen = torch.Generator().manual_seed(0)
    docs = [" ".join(words[i] for i in torch.randint(len(words), (n,), generator=gen).tolist())
            for n in (400, 300, 600, 500, 900)]
    path = folder / "text.txt"
    path.write_text("\n\n".join(docs))
    return path


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _folder_digest(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.iterdir()):
        if f.name == "manifest.json":
            m = json.loads(f.read_text())
            out["manifest"] = _strip({k: m.get(k) for k in ("config", "result", "effective_bits", "evaluation",
                                                            "summary", "calibration")})
        elif f.is_file():
            out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _cli(argv: list[str]) -> dict | None:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli(argv)
    if code:
        raise SystemExit(f"run failed ({code}): prunekit {' '.join(argv)}")
    text = stdout.getvalue()
    return json.loads(text) if text.strip().startswith("{") else None


def digest(real: bool) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / "tiny"
        _tiny_model(model)
        text = _text(tmp)
        data = ["--calib", str(text), "--nsamples", "4", "--seqlen", "128", "--eval", str(text), "--eval-seqlen",
                "128", "--max-windows", "4"]
        runs = {k: (v, ["--model", str(model), *data]) for k, v in TINY_RUNS.items()}
        if real:
            real_data = ["--model", "default", "--calib", "c4", "--nsamples", "4", "--seqlen", "512", "--eval",
                         "wikitext2", "--eval-seqlen", "512", "--max-windows", "4"]
            runs |= {k: (v, real_data) for k, v in REAL_RUNS.items()}
        for name, (argv, common) in runs.items():
            out = tmp / name.replace(":", "_")
            _cli([*argv, *common, "--out", str(out)])
            results[name] = _folder_digest(out)
            results[name]["info"] = _strip(_cli(["info", str(out), "--json"]))
            for fmt in EXPORTS.get(name, []):
                exported = tmp / f"{out.name}-export-{fmt}"
                summary = _cli(["export", "--format", fmt, str(out), str(exported)])
                results[name][f"export-{fmt}"] = _strip(summary) | _folder_digest(exported)
            print(f"{name}: done", file=sys.stderr)
        return json.loads(json.dumps(results).replace(str(tmp), "<tmp>"))


MARKERS = {".prunekit-output"}  # an output's ownership marker, not its content


def _diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted((set(a) | set(b)) - MARKERS) for d in _diff(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", action="store_true", help="also a few runs on the default model (a few minutes)")
    p.add_argument("--save", help="write the digest here")
    p.add_argument("--against", help="compare with a saved digest; exit 1 on any difference")
    args = p.parse_args()
    result = digest(args.real)
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.against:
        diffs = _diff(json.loads(Path(args.against).read_text()), result)
        print("\n".join(diffs) if diffs else f"identical: {len(result)} runs, every file and recorded figure")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
