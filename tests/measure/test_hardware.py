from __future__ import annotations

from collections import Counter

import pytest
import torch

from prunekit.measure.hardware import cpu_info, gpu_info, layer_shapes, microbench, pruned_weight, summarize, verdict
from prunekit.run import semi_structured
from prunekit.selection import Pattern, is_valid_nm
from prunekit.store.formats import format_bytes


@pytest.mark.parametrize(("pattern", "zeros"), [("50%", 0.5), ("70%", 0.7), ("90%", 0.9), ("2:4", 0.5)])
def test_pruned_weight_has_exactly_the_pattern(pattern, zeros):
    w = pruned_weight((24, 64), Pattern.parse(pattern), torch.float32)
    assert int((w == 0).sum()) == round(zeros * w.numel())
    if pattern == "2:4":
        assert is_valid_nm(w, 2, 4)
        assert set(format_bytes(w, (2, 4))) == {"nm", "bitmask", "csr"}


def test_summarize_weights_shapes_by_count_and_says_no_speedup():
    """Hand-computed: two shapes, the second three times as common."""
    rows = [
        {"shape": [8, 8], "count": 1, "pattern": "50%", "sparsity": 0.5, "batch": 1,
         "seconds": {"dense": 4.0, "bitmask": 1.0, "sell": 2.0},
         "dense_bytes": 100, "stored_bytes": {"bitmask": 50, "sell": 70}},
        {"shape": [8, 16], "count": 3, "pattern": "50%", "sparsity": 0.5, "batch": 1,
         "seconds": {"dense": 2.0, "bitmask": 1.0, "sell": 4.0},
         "dense_bytes": 200, "stored_bytes": {"bitmask": 110, "sell": 120}},
        {"shape": [8, 8], "count": 1, "pattern": "50%", "sparsity": 0.5, "batch": 128,
         "seconds": {"dense": 1.0, "bitmask": 1.5, "sell": 1.1},
         "dense_bytes": 100, "stored_bytes": {"bitmask": 50, "sell": 70}},
    ]
    s = summarize(rows)["50%"]
    assert s["speed"][1] == {"layout": "bitmask", "speedup": 2.5, "speedup_vs_gemv": None,
                             "per_layout": {"bitmask": 2.5, "sell": 0.71}}  # 10/4 10/14
    assert s["speed"][128]["speedup"] == 0.91 and s["memory_format"] == "bitmask"
    assert s["memory_ratio"] == round(700 / 380, 2)
    assert "no speedup at batch 128" in s["verdict"] and "2.50× faster at batch 1 (bitmask)" in s["verdict"]


def test_sparse_speedups_are_also_quoted_against_the_compiled_dense_kernel():
    """gemv is never "the best sparse layout"; the zeros' own gain is the best sparse time against it."""
    rows = [{"shape": [8, 8], "count": 1, "pattern": "50%", "sparsity": 0.5, "batch": 1,
             "seconds": {"dense": 4.0, "gemv": 2.0, "bitmask": 1.6}, "dense_bytes": 100, "stored_bytes": {"bitmask": 60}}]
    s = summarize(rows)["50%"]
    assert s["speed"][1]["layout"] == "bitmask" and s["speed"][1]["speedup"] == 2.5
    assert s["speed"][1]["speedup_vs_gemv"] == 1.25
    assert "2.50× faster at batch 1 (bitmask; 1.25× against prunekit's dense gemv)" in s["verdict"]


def test_verdict_text():
    text = verdict("2:4", {1: {"layout": "sell", "speedup": 1.02}}, "nm", 1.88)
    assert text == "2:4: no speedup at batch 1 (1.02× at best); 1.88× less weight memory with the nm format"
    speed = {1: {"layout": "sell", "speedup": 1.10}, 128: {"layout": "bitmask", "speedup": 1.04}}  # 1.04: noise here
    assert verdict("90%", speed, "bitmask", 7.6) == ("90%: 1.10× faster at batch 1 (sell); no speedup at batch 128 "
                                                    "(1.04× at best); 7.60× less weight memory with the bitmask format")


def test_layer_shapes_from_config_only(tiny_model_dir):
    assert layer_shapes(str(tiny_model_dir)) == Counter({(64, 64): 4, (32, 64): 4, (128, 64): 4, (64, 128): 2})


def test_machine_info():
    info = cpu_info()
    assert info["cores"] >= 1 and info["torch_cpu_capability"]
    ok, why = semi_structured.support()
    assert gpu_info()["semi_structured_2to4"] == ("available" if ok else why)
    assert torch.cuda.is_available() or gpu_info() == {"gpu": None, "semi_structured_2to4": "no CUDA GPU"}


def test_microbench_rows():
    rows = microbench(Counter({(16, 32): 2}), (Pattern.parse("50%"), Pattern.parse("2:4")), (1, 3), reps=2)
    assert [(r["pattern"], r["batch"]) for r in rows] == [("50%", 1), ("50%", 3), ("2:4", 1), ("2:4", 3)]
    assert all("dense" in r["seconds"] and len(r["seconds"]) >= 2 for r in rows)
