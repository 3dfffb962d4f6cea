"""Input that used to give wrong results with exit 0, or a traceback: each case through the CLI as a user would run
it now ends with exit 2 and one line that says what is wrong, and writes nothing."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunekit.cli import main


def _nan_weights(model: Path) -> Path:
    f = model / "model.safetensors"
    state = load_file(str(f))
    state["model.layers.1.self_attn.o_proj.weight"][3, 3] = float("nan")  # not a weight any check used to read
    save_file(state, str(f), metadata={"format": "pt"})
    return model


def _task(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MC = [{"context": "a b", "choices": [" c", " d"], "gold": 0}, {"context": "e f", "choices": [" g", " h"], "gold": 1}]


def _pruned(model: Path, root: Path, *extra: str) -> Path:
    out = root / "pruned"
    assert main(["prune", "--model", str(model), "--pattern", "2:4", "--out", str(out), *extra]) == 0
    return out


def _retrained_dense(model: Path, root: Path) -> Path:
    out = _pruned(model, root)
    shutil.copy(model / "model.safetensors", out / "model.safetensors")  # dense weights, 2:4 masks
    return out


def _other_models_masks(model: Path, root: Path) -> Path:
    out = _pruned(model, root)
    from prunekit.store.mask_file import MASKS_FILE, load_masks, save_masks

    masks = {n.replace("model.layers", "transformer.h"): m for n, m in load_masks(out / MASKS_FILE).items()}
    save_masks(masks, out / MASKS_FILE)
    return out


def _bad_grid_shapes(model: Path, root: Path) -> Path:
    out = _pruned(model, root, "--wbits", "8", "--quant-method", "rtn")
    from prunekit.quant.grid import LayerGrid
    from prunekit.store.grid_file import GRIDS_FILE, load_grids, save_grids

    grids = load_grids(out / GRIDS_FILE)
    grids = {n: LayerGrid(g.bits, g.groupsize, g.sym, g.scale[:-1].clone(), g.zero[:-1].clone())
             for n, g in grids.items()}  # one row of scales short: passes the grid file's own checks
    save_grids(grids, out / GRIDS_FILE)
    return out


def _missing_tensor_in_shard(model: Path, root: Path) -> Path:
    names = list(load_file(str(model / "model.safetensors")))
    index = {"metadata": {}, "weight_map": dict.fromkeys(names + ["model.layers.0.mlp.extra.weight"],
                                                         "model.safetensors")}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model


def _cut_gguf(root: Path) -> Path:
    from prunekit.models import default_gguf_path

    cut = root / "cut.gguf"
    cut.write_bytes(default_gguf_path().read_bytes()[:200])  # inside its header
    return cut


CASES = {  # name -> (setup(model, root, text) -> argv, what the one line says)
    "two tasks of one name": (lambda m, r, t: [
        "eval", "--model", m, "--tasks", f"{_task(r / 'd1' / 'same.jsonl', MC)},{_task(r / 'd2' / 'same.jsonl', MC)}",
        "--out", r / "e.json"], "both named"),
    "a whitespace-only context": (lambda m, r, t: [
        "eval", "--model", m, "--tasks", _task(r / "ws.jsonl", [{"context": "  \n", "continuation": " x"}]),
        "--out", r / "e.json"], "not only whitespace"),
    "a whitespace-only choice": (lambda m, r, t: [
        "eval", "--model", m, "--tasks", _task(r / "wc.jsonl", [{"context": "a", "choices": [" ", " b"], "gold": 0}]),
        "--out", r / "e.json"], "non-empty strings"),
    "eval of NaN weights": (lambda m, r, t: [
        "eval", "--model", _nan_weights(m), "--data", t, "--seqlen", "32", "--out", r / "e.json"], "NaN or Inf"),
    "finetune of NaN weights": (lambda m, r, t: [
        "finetune", "--model", _nan_weights(m), "--data", t, "--steps", "1", "--seqlen", "16", "--out", r / "f"],
        "NaN or Inf"),
    "bench of NaN weights": (lambda m, r, t: [
        "bench", "--model", _nan_weights(m), "--prompt-tokens", "4", "--new-tokens", "2"], "NaN or Inf"),
    "a forced layout that fits no layer": (lambda m, r, t: [
        "eval", "--model", m, "--data", t, "--seqlen", "32", "--sparse", "torch_csr", "--out", r / "e.json"],
        "fits no layer"),
    "eval on a missing GPU": (lambda m, r, t: [
        "eval", "--model", m, "--data", t, "--device", "cuda", "--out", r / "e.json"], "no CUDA GPU"),
    "finetune on a missing GPU": (lambda m, r, t: [
        "finetune", "--model", m, "--steps", "1", "--device", "cuda", "--out", r / "f"], "no CUDA GPU"),
    "lottery with no seeds": (lambda m, r, t: ["lottery", "--seeds", "0", "--out", r / "lt"], "--seeds"),
    "lottery with no rounds": (lambda m, r, t: ["lottery", "--rounds", "0", "--out", r / "lt"], "--rounds"),
    "a GGUF cut inside its header": (lambda m, r, t: [
        "eval", "--model", _cut_gguf(r), "--data", t, "--out", r / "e.json"], "cannot read"),
    "an index naming a tensor its shard lacks": (lambda m, r, t: [
        "prune", "--model", _missing_tensor_in_shard(m, r), "--offload", "disk", "--out", r / "o"],
        "holds no readable tensor"),
    "info of a folder retrained dense": (lambda m, r, t: ["info", _retrained_dense(m, r)], "nonzero weights where"),
    "info with another model's masks": (lambda m, r, t: ["info", _other_models_masks(m, r)], "its weights lack"),
    "info of grids that fit no weight": (lambda m, r, t: ["info", _bad_grid_shapes(m, r)], "fit no weight"),
    "export of grids that fit no weight": (lambda m, r, t: ["export", _bad_grid_shapes(m, r), r / "x"],
                                           "fit no weight"),
    "eval of grids that fit no weight": (lambda m, r, t: [
        "eval", "--model", _bad_grid_shapes(m, r), "--data", t, "--seqlen", "32", "--sparse", "--out", r / "e.json"],
        "fit no weight"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_one_line(case, tiny_model_dir, text_files, tmp_path, capsys):
    setup, message = CASES[case]
    root = tmp_path / "work"
    root.mkdir()
    argv = [str(a) for a in setup(tiny_model_dir, root, text_files["txt"])]
    capsys.readouterr()
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunekit: error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written


def test_a_gguf_is_cached_by_its_content(tmp_path, monkeypatch):
    """Two files of one name, size and time are two models (before: the second got the first one's conversion)."""
    from prunekit import models

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    converted = []

    def fake_convert(path, out):
        converted.append(path.read_bytes())
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    gguf = tmp_path / "m.gguf"
    folders = []
    for content in (b"first model", b"other model"):  # same size
        gguf.write_bytes(content)
        os.utime(gguf, (1_000_000, 1_000_000))  # same time
        folders.append(models.resolve_model_path(str(gguf)))
    assert folders[0] != folders[1] and converted == [b"first model", b"other model"]
    assert models.resolve_model_path(str(gguf)) == folders[1] and len(converted) == 2  # the same content: cached


def test_nan_weights_are_found_in_any_parameter(tiny_model_dir):
    from prunekit.errors import PrunekitError
    from prunekit.models import load_model

    _nan_weights(tiny_model_dir)
    with pytest.raises(PrunekitError, match="model.layers.1.self_attn.o_proj contain NaN or Inf"):
        load_model(str(tiny_model_dir))
    assert torch.isnan(load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.1.self_attn.o_proj.weight"]
                       [3, 3])


# -- no false refusals ---------------------------------------------------------------------------------------------

def _gpt2_folder(path: Path) -> Path:
    from transformers import GPT2LMHeadModel

    from conftest import ARCHS, byte_tokenizer

    cfg = ARCHS["gpt2"]()
    cfg.vocab_size = 256
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("argv", [["quantize", "--wbits", "8", "--method", "rtn"],
                                  ["quantize", "--wbits", "4", "--groupsize", "32", "--method", "rtn", "--sym"]])
def test_a_quantized_gpt2_exports_and_loads_back_exactly(argv, tmp_path, capsys):
    """Its square Conv1D weights (stored (in, out)) have no zeros to tell the orientation: the grid tells it (before:
    "not on its grid")."""
    from prunekit.store.export import load_exported

    model = _gpt2_folder(tmp_path / "gpt2")
    assert main([*argv, "--model", str(model), "--out", str(tmp_path / "q")]) == 0
    assert main(["export", str(tmp_path / "q"), str(tmp_path / "x")]) == 0
    capsys.readouterr()
    exported, saved = load_exported(tmp_path / "x"), load_file(str(tmp_path / "q" / "model.safetensors"))
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)


def test_compare_takes_a_model_with_fewer_positions(tmp_path, capsys, monkeypatch):
    """GPT-2 has 1024 positions (this tiny one 128): --seqlen and --eval-seqlen fit it; too long is refused before any
    work (before: no flag for the evaluation windows, so every such model was refused)."""
    model = _gpt2_folder(tmp_path / "gpt2")
    assert main(["compare", "--model", str(model), "--out", str(tmp_path / "c")]) == 2
    assert "longer than the model's 128 positions" in capsys.readouterr().err and not (tmp_path / "c").exists()
    seen = []

    def stop(cfg):
        seen.append((cfg.seqlen, cfg.eval_seqlen))
        raise KeyboardInterrupt  # past every check: the real comparison is another test's

    monkeypatch.setattr("prunekit.measure.compare.run_compare", stop)
    with pytest.raises(KeyboardInterrupt):
        main(["compare", "--model", str(model), "--seqlen", "64", "--eval-seqlen", "128", "--out", str(tmp_path / "c")])
    assert seen == [(64, 128)] and not (tmp_path / "c").exists()


@pytest.mark.parametrize("config", [[1, 2], {"nm": "2:4"}, {"nm": [2, "4"]}, "sparsegpt", None])
def test_info_reads_a_manifest_of_the_wrong_types(config, tiny_model_dir, tmp_path, capsys):
    out = _pruned(tiny_model_dir, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["config"] = config
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    assert all(row["2:4"] for row in json.loads(capsys.readouterr().out)["layers"])
