import json

import pytest
import torch

from prunekit.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_info_eval(tiny_model_dir, text_files, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, _ = _run(capsys, "prune", "--model", str(tiny_model_dir), "--method", "wanda", "--sparsity", "0.5",
                           "--pattern", "2:4", "--calib", str(text_files["jsonl"]), "--nsamples", "4",
                           "--seqlen", "64", "--eval", str(text_files["txt"]), "--eval-seqlen", "64",
                           "--max-windows", "3", "--eval-dense", "--out", str(out))
    assert code == 0
    summary = json.loads(stdout)
    assert summary["sparsity"] == 0.5 and summary["ppl_pruned"] > 0 and summary["ppl_dense"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["source"]["sha256"] and manifest["calibration"]["nsamples"] == 4
    assert manifest["evaluation"]["pruned"]["windows"] == 3 and manifest["config"]["method"] == "wanda"
    assert len(manifest["result"]["layers"]) == 14
    code, stdout, _ = _run(capsys, "info", str(out))
    assert code == 0 and "model.layers.1.mlp.down_proj" in stdout and "yes" in stdout
    code, stdout, _ = _run(capsys, "eval", "--model", str(out), "--data", str(text_files["txt"]), "--seqlen", "64",
                           "--max-windows", "3", "--out", str(tmp_path / "e.json"))
    assert code == 0
    assert json.loads(stdout)["perplexity"] == pytest.approx(summary["ppl_pruned"], rel=1e-4)
    assert json.loads((tmp_path / "e.json").read_text())["evaluation"]["windows"] == 3


BAD = [
    (["--model", "/nonexistent/model"], "model path not found"),
    (["--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["--pattern", "4:4"], "0 < N < M"),
    (["--pattern", "2:3", "--strict"], "not divisible"),
    (["--method", "obs"], "unknown method"),
    (["--method", "wanda", "--calib", "EMPTY"], "is empty"),
    (["--method", "wanda", "--calib", "NOTEXT"], "no 'text' field"),
    (["--method", "wanda", "--nsamples", "0"], "nsamples must be >= 1"),
    (["--out", "EXISTING"], "exists"),
    (["--method", "wanda", "--dtype", "bfloat16", "--calib-dtype", "float32"], "wider than the model"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input(extra, message, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notext.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "existing").mkdir()
    subs = {"EMPTY": str(tmp_path / "empty.jsonl"), "NOTEXT": str(tmp_path / "notext.jsonl"),
            "EXISTING": str(tmp_path / "existing")}
    extra = [subs.get(a, a) for a in extra]
    args = {"--model": str(tiny_model_dir), "--out": str(tmp_path / "out"), "--seqlen": "32", "--nsamples": "2"}
    for flag, value in zip(extra[::2], extra[1::2], strict=False):
        args[flag] = value
    argv = ["prune"] + [x for kv in args.items() for x in kv] + [a for a in extra if a == "--strict"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(capsys, *argv)
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [errors[-1]] and errors[0].startswith("prunekit: error: ") and message in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_nan_weights_cli(tiny_model_dir, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    f = tiny_model_dir / "model.safetensors"
    state = load_file(str(f))
    state["model.layers.0.mlp.up_proj.weight"][0, 0] = float("inf")
    save_file(state, str(f), metadata={"format": "pt"})
    code, _, err = _run(capsys, "prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"))
    assert code == 2 and "NaN or Inf" in err and not (tmp_path / "o").exists()
    assert torch.isinf(load_file(str(f))["model.layers.0.mlp.up_proj.weight"][0, 0])


def test_finetune_cli(tiny_model_dir, text_files, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--pattern", "2:4", "--out", str(pruned)]) == 0
    capsys.readouterr()
    out = tmp_path / "ft"
    code, stdout, _ = _run(capsys, "finetune", "--model", str(pruned), "--data", str(text_files["jsonl"]),
                           "--steps", "3", "--seqlen", "32", "--batch-size", "2", "--eval", str(text_files["txt"]),
                           "--eval-seqlen", "64", "--max-windows", "2", "--out", str(out))
    assert code == 0
    summary = json.loads(stdout)
    assert summary["ppl_before"] > 0 and summary["ppl_after"] > 0
    code, stdout, _ = _run(capsys, "info", str(out), "--json")
    assert all(row["2:4"] for row in json.loads(stdout)["layers"])
    code, _, err = _run(capsys, "finetune", "--model", str(pruned), "--steps", "0", "--out", str(tmp_path / "x"))
    assert code == 2 and "steps must be >= 1" in err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_lottery_cli(tmp_path, capsys):
    code, stdout, _ = _run(capsys, "lottery", "--rounds", "2", "--seeds", "1", "--epochs", "1",
                           "--out", str(tmp_path / "lt"))
    assert code == 0 and json.loads(stdout)["final_sparsity"] == pytest.approx(0.36, abs=1e-3)
    assert (tmp_path / "lt" / "lottery.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "lt" / "lottery.json").read_text())["runs"][0]) == 3


def test_export_cli(tiny_model_dir, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--pattern", "2:4", "--out", str(pruned)]) == 0
    capsys.readouterr()
    code, stdout, _ = _run(capsys, "export", str(pruned), str(tmp_path / "sparse"), "--format", "nm")
    report = json.loads(stdout)  # half the float32 values, and 2:4 ranks at 13 bits per 20 weights
    assert code == 0 and report["layers"] == {"nm": 14}
    assert report["target_ratio"] == pytest.approx(32 / (16 + 13 / 20), rel=1e-3)
    code, _, err = _run(capsys, "export", str(pruned), str(tmp_path / "sparse"))
    assert code == 2 and "exists" in err


@pytest.mark.slow
def test_hardware_cli(tiny_model_dir, tmp_path, capsys):
    code, stdout, _ = _run(capsys, "hardware", "--model", str(tiny_model_dir), "--patterns", "50%,2:4", "--batches", "1",
               "--reps", "2", "--out", str(tmp_path / "hw.json"))
    out = json.loads(stdout)
    assert code == 0 and len(out["verdicts"]) == 2 and out["verdicts"][1].startswith("2:4: ")
    assert json.loads((tmp_path / "hw.json").read_text())["report"]["rows"]
    assert main(["hardware", "--batches", "0"]) == 2
    assert main(["hardware", "--patterns", "half%"]) == 2
    assert main(["hardware", "--patterns", "5:4"]) == 2


def test_bench_cli(tiny_model_dir, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.7", "--out", str(pruned)]) == 0
    capsys.readouterr()
    code, stdout, _ = _run(capsys, "bench", "--model", str(pruned), "--prompt-tokens", "16", "--new-tokens", "3",
                           "--reps", "1", "--layout", "torch_csr")
    out = json.loads(stdout)
    assert code == 0 and out["layouts"] == {"torch_csr": 14} and out["ratios"]["decode_speedup"] > 0
    assert main(["bench", "--model", str(pruned), "--new-tokens", "1"]) == 2
    assert main(["bench", "--model", str(pruned), "--device", "tpu"]) == 2
    if not torch.cuda.is_available():  # a clear refusal, before the model is loaded
        assert main(["bench", "--model", str(pruned), "--device", "cuda", "--dtype", "float16"]) == 2
        assert "semi-structured" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_prune_quantize_and_bench_on_cuda(tiny_model_dir, text_files, tmp_path, capsys):
    """The GPU path end to end: blocks calibrated and solved on the GPU (2:4 + int4 joint), the folder on its
    grids, then run dense and 2:4 semi-structured on the GPU in float16."""
    out = tmp_path / "p"
    assert main(["prune", "--model", str(tiny_model_dir), "--device", "cuda", "--method", "sparsegpt", "--pattern",
                 "2:4", "--wbits", "4", "--groupsize", "32", "--order", "joint", "--calib", str(text_files["jsonl"]),
                 "--nsamples", "2", "--seqlen", "32", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["quant"]["wbits"] == 4 and len(manifest["result"]["layers"]) == 14
    capsys.readouterr()
    code, stdout, _ = _run(capsys, "bench", "--model", str(out), "--device", "cuda", "--dtype", "float16",
                           "--prompt-tokens", "16", "--new-tokens", "3", "--reps", "1")
    res = json.loads(stdout)
    assert code == 0 and res["device"].startswith("cuda") and res["ratios"]["decode_speedup"] > 0


@pytest.mark.kernel
def test_bench_and_eval_run_a_quantized_folder_on_its_levels(tiny_model_dir, text_files, tmp_path, capsys):
    """A quantized folder's grids reach sparsify: every layer runs on its int4 levels, and perplexity under
    the kernels matches perplexity under the dequantized weights."""
    q = tmp_path / "q"
    assert main(["quantize", "--model", str(tiny_model_dir), "--wbits", "4", "--groupsize", "64", "--method", "rtn",
                 "--calib", str(text_files["jsonl"]), "--nsamples", "2", "--seqlen", "32", "--out", str(q)]) == 0
    capsys.readouterr()
    code, stdout, _ = _run(capsys, "bench", "--model", str(q), "--prompt-tokens", "8", "--new-tokens", "2", "--reps", "1",
                           "--layout", "qdense")
    assert code == 0 and json.loads(stdout)["layouts"] == {"qdense": 14}
    ppl = {}
    for sparse in ([], ["--sparse", "qdense"]):
        code, stdout, _ = _run(capsys, "eval", "--model", str(q), "--data", str(text_files["txt"]), "--seqlen", "32",
                               *sparse, "--out", str(tmp_path / f"e{len(sparse)}.json"))
        assert code == 0
        ppl[bool(sparse)] = json.loads(stdout)
    assert ppl[True]["layouts"] == {"qdense": 14}
    assert ppl[True]["perplexity"] == pytest.approx(ppl[False]["perplexity"], rel=1e-4)


def test_quantize_and_prune_with_quantization_write_grids_and_count_bits(tiny_model_dir, text_files, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from prunekit.store.grid_file import load_grids
    from prunekit.targets import find_targets, weight_view

    calib = ["--calib", str(text_files["jsonl"]), "--nsamples", "4", "--seqlen", "64"]
    runs = {
        "q": ["quantize", "--wbits", "4", "--groupsize", "32", "--method", "gptq", *calib],
        "pq": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--blocksize", "32", "--wbits", "4",
               "--groupsize", "32", "--order", "joint", *calib],
    }
    for name, argv in runs.items():
        code, stdout, _ = _run(capsys, *argv, "--model", str(tiny_model_dir), "--out", str(tmp_path / name))
        assert code == 0, name
        summary = json.loads(stdout)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["config"]["quant"]["wbits"] == 4 and manifest["effective_bits"]["model"]["weights"] > 0
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name)  # plain transformers loads it, dequantized
        grids = load_grids(tmp_path / name / "quant.safetensors")
        for layer, module in find_targets(model).items():
            assert torch.equal(grids[layer].apply(weight_view(module)), weight_view(module)), (name, layer)
        code, table, _ = _run(capsys, "info", str(tmp_path / name))
        assert code == 0 and "bits/weight" in table
        expected = {"q": 4 + 20 / 32, "pq": 0.5 * 4 + 13 / 20 + 20 / 32}[name]  # values + 2:4 ranks + grid
        assert summary["bits_per_weight"] == pytest.approx(expected, abs=1e-3), name  # a last chunk per layer
        assert summary["sparsity"] == (0.0 if name == "q" else 0.5)


def test_finetune_of_a_quantized_folder_keeps_its_grids(tiny_model_dir, text_files, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from prunekit.store.grid_file import load_grids
    from prunekit.targets import find_targets, weight_view

    q = tmp_path / "q"
    assert main(["quantize", "--model", str(tiny_model_dir), "--wbits", "4", "--groupsize", "32", "--method", "rtn",
                 "--out", str(q)]) == 0
    code, _, _ = _run(capsys, "finetune", "--model", str(q), "--data", str(text_files["txt"]), "--steps", "2",
                      "--seqlen", "32", "--batch-size", "2", "--out", str(tmp_path / "ft"))
    assert code == 0
    grids = load_grids(tmp_path / "ft" / "quant.safetensors")
    assert json.loads((tmp_path / "ft" / "manifest.json").read_text())["finetune"]["frozen_grids"] is True
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ft")
    for name, module in find_targets(model).items():
        assert torch.equal(grids[name].apply(weight_view(module)), weight_view(module)), name


@pytest.mark.parametrize("flag,expected", [([], True), (["--no-act-order"], False)])
def test_gptq_runs_in_activation_order_unless_told_not_to(tiny_model_dir, text_files, tmp_path, capsys, flag, expected):
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(tiny_model_dir), "--wbits", "4", "--groupsize", "32", "--method", "gptq",
                 *flag, "--calib", str(text_files["jsonl"]), "--nsamples", "2", "--seqlen", "32", "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["quant"]["act_order"] is expected
