"""Block-wise reconstruction: it lowers each block's output error against the dense block, never changes a mask or
a grid, leaves a student equal to its teacher as it is, and runs inside pruning and standalone (CLI)."""

import copy
import json

import pytest
import torch

from conftest import run_with_teacher, tiny_llama
from prunekit import PruneConfig, prune
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.oneshot.calibrate import capture_inputs, run_block
from prunekit.oneshot.config import RecoverConfig
from prunekit.oneshot.reconstruct import reconstruct, reconstruct_block, relative_error
from prunekit.selection import is_valid_nm
from prunekit.targets import block_targets, find_blocks, find_targets, weight_view

RECOVER = {"recover": "block", "recover_epochs": 3, "recover_lr": 1e-3}


def _calib(n=6, seqlen=32):
    return torch.randint(0, 256, (n, seqlen), generator=torch.Generator().manual_seed(5))


def _block_setup(quant=None):
    """A tiny model's first block pruned 2:4 (and quantized), its inputs, and the dense block's outputs."""
    dense = tiny_llama()
    block = find_blocks(dense)[1][0]
    inputs = capture_inputs(dense, block, _calib(), 1)
    wanted = run_block(copy.deepcopy(block), inputs).hidden
    model = copy.deepcopy(dense)
    result = prune(model, PruneConfig(method="wanda", pattern="2:4", include=("layers\\.0\\.",), quant=quant or {}),
                   _calib(), progress=False)
    block = find_blocks(model)[1][0]
    local = block_targets(block, "model.layers.0", find_targets(model))
    return block, local, {n: result.masks[n] for n in local}, inputs, wanted, result.grids


def test_reconstruction_lowers_the_output_error_and_keeps_every_mask():
    block, local, keep, inputs, wanted, _ = _block_setup()
    before = relative_error(block, inputs, wanted)
    untouched = {n: p.clone() for n, p in block.named_parameters()}
    report = reconstruct_block(block, local, keep, inputs, wanted, RecoverConfig(**RECOVER))
    after = relative_error(block, inputs, wanted)
    assert report["error_before"] == pytest.approx(before) and report["error_after"] == pytest.approx(after)
    assert after < 0.7 * before and report["steps"] == 3 * 6
    for name, target in local.items():
        w = weight_view(target)
        assert torch.equal(w[~keep[name]], torch.zeros_like(w[~keep[name]])), name  # pruned stay exactly zero
        assert is_valid_nm(w, 2, 4)
    assert any(not torch.equal(p, untouched[n]) for n, p in block.named_parameters())  # it trained something


def test_a_reconstruction_that_makes_the_block_worse_is_undone(caplog):
    block, local, keep, inputs, wanted, _ = _block_setup()
    before = {n: p.clone() for n, p in block.state_dict().items()}
    report = reconstruct_block(block, local, keep, inputs, wanted, RecoverConfig(**RECOVER | {"recover_lr": 10.0}))
    assert report["kept"] == "original" and not report["error_trained"] <= report["error_before"]
    assert report["error_after"] == report["error_before"] and "made the output error worse" in caplog.text
    for name, t in block.state_dict().items():
        assert torch.equal(t, before[name]), name


def test_quantized_layers_train_through_their_grids_and_end_on_them():
    block, local, keep, inputs, wanted, grids = _block_setup({"wbits": 4, "groupsize": 16, "quant_method": "rtn"})
    assert set(grids) == set(local)
    report = reconstruct_block(block, local, keep, inputs, wanted, RecoverConfig(**RECOVER), grids)
    assert report["error_after"] < report["error_before"]
    for name, target in local.items():
        w = weight_view(target)
        assert torch.equal(grids[name].apply(w).to(w.dtype), w), name  # every weight on its frozen grid
        assert not w[~keep[name]].any()
        assert not hasattr(target, "parametrizations")  # the straight-through rounding is gone


def test_a_student_equal_to_its_teacher_is_left_as_it_is():
    student, teacher = tiny_llama(), tiny_llama()
    before = copy.deepcopy(student.state_dict())
    reports = reconstruct(student, teacher, _calib(), RecoverConfig(**RECOVER), progress=False)
    assert [r["error_before"] for r in reports] == [0.0, 0.0]
    for name, t in student.state_dict().items():
        assert torch.equal(t, before[name]), name


@pytest.mark.parametrize("stream", ["student", "teacher"])
def test_pruning_with_reconstruction_records_each_block_and_keeps_the_pattern(stream):
    model = tiny_llama()
    config = PruneConfig(method="sparsegpt", pattern="2:4", blocksize=16, calib_dtype="model",
                         recovery=RECOVER | {"recover_stream": stream})
    result = prune(model, config, _calib(), progress=False)
    blocks = result.info["recover"]["blocks"]
    assert [b["block"] for b in blocks] == [0, 1] and all(b["error_after"] < b["error_before"] for b in blocks)
    assert result.info["recover"]["config"]["recover_stream"] == stream
    assert "dense_stream_mb" in result.info["memory_bound"]
    for name, target in find_targets(model).items():
        assert is_valid_nm(weight_view(target), 2, 4) and torch.equal(weight_view(target) != 0, result.masks[name])


def test_magnitude_pruning_is_calibrated_for_the_reconstruction():
    config = PruneConfig(method="magnitude", sparsity=0.5, recovery=RECOVER)
    assert config.needs_calibration
    model = tiny_llama()
    result = prune(model, config, _calib(), progress=False)
    assert result.sparsity == pytest.approx(0.5, abs=1e-3) and len(result.info["recover"]["blocks"]) == 2


@pytest.mark.parametrize("bad", [{"sequential": "sublayer"}, {"recovery": RECOVER | {"recover_epochs": 0}},
                                 {"recovery": RECOVER | {"recover_lr": float("nan")}},
                                 {"recovery": RECOVER | {"recover_stream": "both"}}])
def test_bad_reconstruction_settings_are_refused(bad):
    with pytest.raises(PrunekitError):
        PruneConfig(method="wanda", **({"recovery": RECOVER} | bad))


def test_cli_recovers_a_pruned_folder_against_its_teacher(tiny_model_dir, text_files, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--pattern", "2:4", "--calib",
                 str(text_files["jsonl"]), "--nsamples", "4", "--seqlen", "32", "--out", str(pruned)]) == 0
    common = ["recover", "--model", str(pruned), "--calib", str(text_files["jsonl"]), "--nsamples", "4", "--seqlen",
              "32", "--recover-epochs", "2", "--recover-lr", "1e-3"]
    manifest = run_with_teacher(main, common, tiny_model_dir, text_files, tmp_path, capsys)
    recover = manifest["recover"]
    assert recover["teacher"] == str(tiny_model_dir) and recover["tokens"] == 4 * 32
    assert all(b["error_after"] < b["error_before"] for b in recover["blocks"])
    assert manifest["summary"]["ppl_after"] > 0 and manifest["summary"]["blocks"] == 2
    from safetensors.torch import load_file

    before, after = load_file(pruned / "model.safetensors"), load_file(tmp_path / "c" / "model.safetensors")
    for name in before:
        if "layers" in name and name.endswith("proj.weight"):
            assert torch.equal(after[name] != 0, before[name] != 0), name  # the same mask


def test_cli_prune_with_recover_block_records_the_reconstruction(tiny_model_dir, text_files, tmp_path):
    out = tmp_path / "out"
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--pattern", "2:4", "--calib",
                 str(text_files["jsonl"]), "--nsamples", "4", "--seqlen", "32", "--recover", "block",
                 "--recover-epochs", "1", "--recover-stream", "teacher", "--out", str(out)]) == 0
    result = json.loads((out / "manifest.json").read_text())["result"]
    assert result["recover"]["config"] == {"recover": "block", "recover_epochs": 1, "recover_lr": 1e-3,
                                           "recover_stream": "teacher"}
    assert len(result["recover"]["blocks"]) == 2 and result["sparsity"] == pytest.approx(0.5)
