"""Nothing a user has is lost: every case through the CLI as a user would run it, then the disk compared with what
it was (only the output may change, and only when it is prunekit's to replace)."""

from pathlib import Path

import pytest

from conftest import snapshot
from prunekit.cli import main

MANIFEST = '{"versions": {"prunekit": "0.1.0"}}'


def _pruned(tiny_model_dir: Path, out: Path, capsys) -> Path:
    assert main(["prune", "--model", str(tiny_model_dir), "--pattern", "2:4", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _users_folder(root: Path, name: str, *, manifest: bool) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    if manifest:
        (folder / "manifest.json").write_text(MANIFEST)  # copied from a prunekit run
    return folder


def _victim(root: Path) -> Path:
    victim = root / "victim"
    victim.mkdir(exist_ok=True)
    (victim / "model.safetensors").write_bytes(b"weights")
    return victim / "model.safetensors"


CASES = {  # name -> (setup(root, model, capsys) -> argv, exit code, what the error says)
    "prune over a user's folder with a copied manifest": (
        lambda r, m, c: ["prune", "--model", m, "--overwrite", "--out", _users_folder(r, "out", manifest=True)],
        2, "not a prunekit output"),
    "quantize over a user's folder": (
        lambda r, m, c: ["quantize", "--model", m, "--wbits", "8", "--method", "rtn", "--overwrite", "--out",
                         _users_folder(r, "out", manifest=False)], 2, "not a prunekit output"),
    "prune over an output a user added to": (
        lambda r, m, c: ["prune", "--model", m, "--overwrite", "--out",
                         (lambda o: (o / "notes.txt").write_text("mine") and o)(_pruned(m, r / "out", c))],
        2, "not a prunekit output"),
    "prune through a link to an output": (
        lambda r, m, c: ["prune", "--model", m, "--overwrite", "--out",
                         (lambda o: (r / "link").symlink_to(o) or r / "link")(_pruned(m, r / "out", c))],
        2, "is a link"),
    "a failing prune beside a user's .out.tmp-x": (
        lambda r, m, c: ((r / ".out.tmp-x").mkdir(), (r / ".out.tmp-x" / "a").touch(),
                         ["prune", "--model", r / "missing", "--out", r / "out"])[-1], 2, "model path not found"),
    "a failing prune beside an existing output and a user's .out.tmp-y": (
        lambda r, m, c: (_pruned(m, r / "out", c), (r / ".out.tmp-y").mkdir(),
                         ["prune", "--model", r / "missing", "--overwrite", "--out", r / "out"])[-1], 2,
        "model path not found"),
    "a prune whose set-aside name is a user's": (
        lambda r, m, c: ((r / ".out.old").mkdir(), ["prune", "--model", m, "--out", r / "out"])[-1], 2, "in the way"),
    "eval over a weights file": (
        lambda r, m, c: ["eval", "--model", m, "--data", "wikitext2", "--out", _victim(r)], 2, "exists"),
    "eval over a weights file with --overwrite": (
        lambda r, m, c: ["eval", "--model", m, "--data", "wikitext2", "--overwrite", "--out", _victim(r)],
        2, "not a file prunekit wrote"),
    "bench over a weights file": (
        lambda r, m, c: ["bench", "--model", m, "--overwrite", "--out", _victim(r)], 2, "not a file prunekit wrote"),
    "hardware over a weights file": (
        lambda r, m, c: ["hardware", "--model", m, "--out", _victim(r)], 2, "exists"),
    "export onto its own source": (
        lambda r, m, c: ["export", _pruned(m, r / "p", c), r / "p", "--overwrite"], 2, "outside the folder it reads"),
    "export into its own source": (
        lambda r, m, c: ["export", _pruned(m, r / "p", c), r / "p" / "sparse"], 2, "outside the folder it reads"),
    "export over the folder holding its source": (
        lambda r, m, c: ["export", _pruned(m, r / "p" / "in", c), r / "p", "--overwrite"], 2,
        "outside the folder it reads"),
    "finetune over a user's folder": (
        lambda r, m, c: ["finetune", "--model", m, "--steps", "1", "--overwrite", "--out",
                         _users_folder(r, "out", manifest=True)], 2, "not a prunekit output"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nothing_a_user_has_is_lost(case, tiny_model_dir, tmp_path, capsys):
    setup, exit_code, message = CASES[case]
    root = tmp_path / "work"
    root.mkdir()
    argv = [str(a) for a in setup(root, tiny_model_dir, capsys)]
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunekit: error:")]
    assert code == exit_code and len(errors) == 1 and message in errors[0], err
    assert snapshot(root) == before  # nothing changed: no file lost, replaced, moved or left behind
