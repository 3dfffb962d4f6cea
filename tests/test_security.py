"""A model folder is data: its code never runs, and nothing it names leads outside it or to a file that is not a
regular file. Table-driven against the CLI as a user would run it: the exit code, one line on stderr, and the
disk afterwards (no code ran, nothing outside the output written, nothing half-written)."""

import contextlib
import io
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from conftest import byte_tokenizer, snapshot, tiny_llama
from prunekit.cli import main

EVIL_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("the model folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
class EvilConfig(LlamaConfig):
    model_type = "evilarch"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


@contextlib.contextmanager
def _deadline(seconds: int = 120):
    """Fail instead of hanging (a blocking read of a FIFO is interrupted by the alarm)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: something read a file that never ends")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cli(capsys, monkeypatch, *argv) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 20))  # anyone asking "run custom code?" hears yes
    with _deadline():
        code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunekit: error:")]
    assert code == 0 or len(errors) == 1, err  # an error is one line
    return code, (errors or [""])[0]


def _folder(path: Path) -> Path:
    tiny_llama().save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


# -- a model folder's own code never runs ------------------------------------------------------------------------

def _with_code(folder: Path, marker: Path, model_type: str, where: str) -> None:
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    if where == "config":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["model_type"] = model_type
        cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        (folder / "config.json").write_text(json.dumps(cfg))
    else:
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        cfg["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
        cfg["tokenizer_class"] = "EvilTokenizer"
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))


CODE_CASES = [  # (where the code is declared, model type, exit code): a known type loads with its own class
    ("config", "llama", 0), ("config", "evilarch", 2), ("tokenizer", "llama", 2),
]
COMMANDS = {
    "eval": lambda m, t, o: ["eval", "--model", m, "--data", t, "--seqlen", "32", "--max-windows", "1", "--out",
                             o / "e.json"],
    "prune": lambda m, t, o: ["prune", "--model", m, "--out", o / "p"],
    "quantize": lambda m, t, o: ["quantize", "--model", m, "--wbits", "8", "--method", "rtn", "--out", o / "q"],
    "prune-offload": lambda m, t, o: ["prune", "--model", m, "--offload", "disk", "--out", o / "d"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("where,model_type,exit_code", CODE_CASES)
def test_a_model_folders_code_never_runs(where, model_type, exit_code, command, tmp_path, text_files, capsys,
                                         monkeypatch):
    folder = _folder(tmp_path / "model")
    marker = tmp_path / "RAN"
    _with_code(folder, marker, model_type, where)
    out = tmp_path / "out"
    out.mkdir()
    code, error = _cli(capsys, monkeypatch, *COMMANDS[command](folder, text_files["txt"], out))
    assert not marker.exists() and not list(tmp_path.rglob("__pycache__"))
    assert code == exit_code, error
    if code:
        assert "custom code" in error and not list(out.iterdir())


# -- nothing read outside the folder, nothing but regular files -----------------------------------------------------

def _outside_shard(folder: Path, how: str) -> None:
    """The weights moved out of the folder, named by an index (relative or absolute) or reached by a link."""
    from safetensors.torch import load_file

    names = list(load_file(str(folder / "model.safetensors")))
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    shutil.move(folder / "model.safetensors", elsewhere / "x.safetensors")
    target = {"relative": "../elsewhere/x.safetensors", "absolute": str(elsewhere / "x.safetensors")}.get(how)
    if target:
        index = {"metadata": {}, "weight_map": dict.fromkeys(names, target)}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    else:  # a link inside the folder that leads out of it
        (folder / "model.safetensors").symlink_to(elsewhere / "x.safetensors")


def _fifo(folder: Path, name: str) -> None:
    path = folder / name
    if path.exists():
        path.unlink()
    os.mkfifo(path)


def _link_out(folder: Path, name: str) -> None:
    secret = folder.parent / "secret.json"
    secret.write_text((folder / name).read_text())
    (folder / name).unlink()
    (folder / name).symlink_to(secret)


MODEL_CASES = [  # (how the folder is spoiled, command, exit code, what the error says)
    (lambda f: _outside_shard(f, "relative"), "prune-offload", 2, "leads outside"),
    (lambda f: _outside_shard(f, "absolute"), "prune-offload", 2, "leads outside"),
    (lambda f: _outside_shard(f, "link"), "prune-offload", 2, "leads outside"),
    (lambda f: _outside_shard(f, "relative"), "prune", 2, "leads outside"),
    (lambda f: _outside_shard(f, "link"), "eval", 2, "leads outside"),
    (lambda f: _link_out(f, "config.json"), "eval", 2, "leads outside"),
    (lambda f: _link_out(f, "tokenizer_config.json"), "prune", 2, "leads outside"),
    (lambda f: _fifo(f, "tokenizer.json"), "eval", 2, "not a regular file"),
    (lambda f: _fifo(f, "model.safetensors"), "prune", 2, "not a regular file"),
    (lambda f: _fifo(f, "extra.bin"), "eval", 0, ""),  # not a file the model needs: never opened (was: hashed)
    (lambda f: _fifo(f, "notes.pt"), "prune", 0, ""),
    (lambda f: (f / "x.safetensors").symlink_to("/dev/zero"), "quantize", 0, ""),
]


@pytest.mark.parametrize("spoil,command,exit_code,message", MODEL_CASES)
def test_a_model_folder_never_leads_elsewhere(spoil, command, exit_code, message, tmp_path, text_files, capsys,
                                              monkeypatch):
    folder = _folder(tmp_path / "model")
    spoil(folder)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path / "model")
    code, error = _cli(capsys, monkeypatch, *COMMANDS[command](folder, text_files["txt"], out))
    assert code == exit_code and message in error, error
    assert snapshot(tmp_path / "model") == before  # the input folder is as it was
    if code:
        assert not list(out.iterdir())  # nothing written


def _pruned(tmp_path: Path, capsys) -> Path:
    folder = _folder(tmp_path / "model")
    assert main(["prune", "--model", str(folder), "--pattern", "2:4", "--out", str(tmp_path / "pruned")]) == 0
    capsys.readouterr()
    return tmp_path / "pruned"


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    secret.chmod(0o600)
    return secret


EXPORT_CASES = [  # (what is added to a pruned folder, exit code, what the error says)
    (lambda f, t: (f / "notes.txt").symlink_to(_secret(t)), 0, ""),
    (lambda f, t: (f / "passwd").symlink_to("/etc/passwd"), 0, ""),
    (lambda f, t: (f / "zeros.json").symlink_to("/dev/zero"), 0, ""),
    (lambda f, t: _fifo(f, "pipe.txt"), 0, ""),
    (lambda f, t: (f / "sub").symlink_to(t), 0, ""),
    (lambda f, t: _link_out(f, "manifest.json"), 0, ""),
    (lambda f, t: (f / "extra.safetensors").symlink_to(t / "model" / "model.safetensors"), 2, "leads outside"),
    (lambda f, t: _fifo(f, "masks.safetensors"), 2, "not a regular file"),
    (lambda f, t: (f / "quant.safetensors").symlink_to("/dev/zero"), 2, "leads outside"),
]


@pytest.mark.parametrize("add,exit_code,message", EXPORT_CASES)
def test_export_copies_regular_files_only(add, exit_code, message, tmp_path, capsys, monkeypatch):
    pruned = _pruned(tmp_path, capsys)
    add(pruned, tmp_path)
    before = snapshot(pruned)
    code, error = _cli(capsys, monkeypatch, "export", pruned, tmp_path / "exported")
    assert code == exit_code and message in error, error
    assert snapshot(pruned) == before
    if code:
        assert not (tmp_path / "exported").exists()
        return
    exported = tmp_path / "exported"
    assert all(p.is_file() and not p.is_symlink() for p in exported.iterdir())  # only regular files came out
    assert b"private" not in b"".join(p.read_bytes() for p in exported.iterdir())
    assert {p.name for p in exported.iterdir()} <= {p.name for p in pruned.iterdir()} | {"weights.prunekit.safetensors"}


@pytest.mark.parametrize("spoil,message", [
    (lambda f: _fifo(f, "masks.safetensors"), "not a regular file"),
    (lambda f: (f / "masks.safetensors").unlink() or (f / "masks.safetensors").symlink_to("/dev/zero"),
     "leads outside"),
    (lambda f: _link_out(f, "manifest.json"), "leads outside"),
])
def test_info_reads_regular_files_inside_only(spoil, message, tmp_path, capsys, monkeypatch):
    pruned = _pruned(tmp_path, capsys)
    spoil(pruned)
    code, error = _cli(capsys, monkeypatch, "info", pruned)
    assert code == 2 and message in error, error
