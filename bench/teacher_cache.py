"""Teacher logits on the fly or cached to disk (issue 29): which is cheaper per distillation step?

One KD step of ``prunekit finetune`` (default: 2 windows of 512 tokens) runs the student forward and backward and
the teacher forward. A cache would replace the teacher's forward by reading its logits back (float16, written once
and reused across epochs). This times, alternately in one process on the default model:
- the teacher's forward (logits; and with every block's output, as SquareHead needs),
- reading that step's cached float16 logits back, from the page cache (warm) and after evicting the file from it
  (cold: ``posix_fadvise(DONTNEED)``), into float32,
- the student's forward and backward on the same batch (the rest of the step),
and prints the cache's size per step and per token. Medians of ``--reps``.

    .venv/bin/python bench/teacher_cache.py --out docs/recovery/teacher_cache.json

Prints JSON and a table. Nothing else may run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from prunekit.data import CalibConfig, load_text, sample_calibration
from prunekit.models import load_model
from prunekit.store.manifest import build_manifest, write_json


def _timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def _student_step(student: torch.nn.Module, batch: torch.Tensor) -> None:
    out = student(input_ids=batch, labels=batch, use_cache=False)
    out.loss.backward()
    student.zero_grad(set_to_none=True)


def _read(path: Path, cold: bool) -> torch.Tensor:
    if cold:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return torch.load(path, weights_only=True).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.manual_seed(0)
    teacher, tok, _ = load_model("default")
    student, _, _ = load_model("default")
    teacher.eval().requires_grad_(False)
    windows = sample_calibration(load_text("c4"), tok, CalibConfig("c4", args.reps * args.batch_size, args.seqlen, 0))
    times: dict[str, list[float]] = {k: [] for k in ("teacher_logits", "teacher_features", "cache_warm", "cache_cold",
                                                      "student_step")}
    with torch.no_grad():
        teacher(input_ids=windows[:1], use_cache=False)  # warm-up, untimed
    _student_step(student, windows[:1])
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for r in range(args.reps):
            batch = windows[r * args.batch_size:(r + 1) * args.batch_size]  # (batch, seqlen)
            with torch.no_grad():
                times["teacher_logits"].append(_timed(teacher, input_ids=batch, use_cache=False))
                times["teacher_features"].append(_timed(teacher, input_ids=batch, use_cache=False,
                                                        output_hidden_states=True))
                logits = teacher(input_ids=batch, use_cache=False).logits  # (batch, seqlen, vocab)
            path = Path(tmp) / f"step{r}.pt"
            torch.save(logits.half(), path)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            size = path.stat().st_size
            times["cache_warm"].append(_timed(_read, path, cold=False))
            times["cache_cold"].append(_timed(_read, path, cold=True))
            times["student_step"].append(_timed(_student_step, student, batch))
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    step = med["student_step"] + med["teacher_logits"]
    result = {"batch_size": args.batch_size, "seqlen": args.seqlen, "reps": args.reps, "seconds_median": med,
              "cache_mb_per_step": round(size / 2**20, 1), "cache_bytes_per_token": size // batch.numel(),
              "teacher_share_of_kd_step": round(med["teacher_logits"] / step, 3),
              "kd_step_saving_cold_cache": round((med["teacher_logits"] - med["cache_cold"]) / step, 3)}
    report = build_manifest(command=sys.argv, result=result)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2))
    print("\n| per KD step | seconds (median) |\n| --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v} |")
    print(f"\ncache: {result['cache_mb_per_step']} MB per step ({result['cache_bytes_per_token']} bytes per token); "
          f"teacher forward = {100 * result['teacher_share_of_kd_step']:.0f}% of a KD step; a cold cache would save "
          f"{100 * result['kd_step_saving_cold_cache']:.0f}% of it")


if __name__ == "__main__":
    main()
