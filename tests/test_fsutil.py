"""Output folders: all or nothing, never a user's folder replaced, an interrupted replace recovered, one run at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from prunekit.errors import PrunekitError
from prunekit.fsutil import OWNER_FILE, TEMP_MARKER, atomic_dir, check_output_file, claim_output


def _write(out, text, overwrite=False):
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "result.txt").write_text(text)


def test_overwrite_replaces_only_prunekit_outputs(tmp_path):
    out = tmp_path / "out"
    _write(out, "first")
    _write(out, "second", overwrite=True)
    assert (out / "result.txt").read_text() == "second" and (out / OWNER_FILE).is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(PrunekitError, match=r"not a prunekit output \(it holds notes.txt\)"):
        _write(tmp_path / "mine", "x", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", "fine", overwrite=True)  # an empty folder holds nothing to lose
    older = tmp_path / "older"  # written by a prunekit before the marker: its manifest names prunekit
    older.mkdir()
    (older / "manifest.json").write_text('{"versions": {"prunekit": "0.1.0"}}')
    (older / "config.json").write_text("{}")
    _write(older, "fine", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "older", "out"]  # no temporaries, no locks


@pytest.mark.parametrize("spoil", [
    lambda f: (f / "manifest.json").write_text('{"versions": {"prunekit": "0.1.0"}}'),  # a copied manifest alone
    lambda f: ((f / "manifest.json").write_text('{"versions": {"prunekit": "0.1.0"}}'), (f / "notes.txt").touch()),
    lambda f: (_write(f, "ours", overwrite=True), (f / "notes.txt").touch()),  # a user's file added to an output
    lambda f: (_write(f, "ours", overwrite=True), (f / "sub").mkdir(), (f / "sub" / "x").touch()),
    lambda f: ((f / OWNER_FILE).write_text("written by prunekit"), (f / "notes.txt").touch()),  # an older marker
    lambda f: ((f / OWNER_FILE).write_text('{"files": []}'), (f / "config.json").touch()),
])
def test_overwrite_never_deletes_what_prunekit_did_not_write(spoil, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    spoil(folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(PrunekitError, match="not a prunekit output"):
        _write(folder, "x", overwrite=True)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_an_output_of_an_earlier_prunekit_is_replaced_when_it_holds_only_its_files(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / OWNER_FILE).write_text("written by prunekit; --overwrite may replace this folder\n")
    for name in ("config.json", "model.safetensors", "masks.safetensors", "manifest.json", "tokenizer.json"):
        (folder / name).touch()
    _write(folder, "new", overwrite=True)
    assert (folder / "result.txt").read_text() == "new"


def test_an_interrupted_replace_is_put_back_and_temporaries_removed(tmp_path, caplog):
    out = tmp_path / "out"
    _write(out, "previous")
    # a crash between the two renames of a replace: the previous output set aside (marked), the new one not in place
    (out / TEMP_MARKER).touch()
    out.rename(tmp_path / ".out.old")
    (tmp_path / ".out.tmp-abc123").mkdir()
    (tmp_path / ".out.tmp-abc123" / TEMP_MARKER).touch()
    (tmp_path / ".out.tmp-abc123" / "half.bin").write_bytes(b"x" * 1000)
    (tmp_path / ".out.tmp-mine").mkdir()  # a user's folder of that name: never prunekit's to remove
    (tmp_path / ".out.tmp-mine" / "keep.txt").write_text("keep")
    with caplog.at_level("WARNING"), claim_output(out, overwrite=True):
        assert (out / "result.txt").read_text() == "previous" and not (out / TEMP_MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-mine", "out"]
    assert "interrupted while replacing" in caplog.text and "left by an interrupted run" in caplog.text
    (tmp_path / ".out.old").mkdir()  # a crash after the replace, before the clean-up: the old copy just goes
    (tmp_path / ".out.old" / TEMP_MARKER).touch()
    with claim_output(out, overwrite=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-mine", "out"]


def test_folders_beside_the_output_that_are_not_prunekits_stay(tmp_path):
    """Even a run that fails at once (a missing model) touches nothing beside --out that it did not make."""
    from prunekit.cli import main

    (tmp_path / ".out.old").mkdir()
    (tmp_path / ".out.old" / "keep.txt").write_text("keep")
    (tmp_path / ".out.tmp-x").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["prune", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    with pytest.raises(PrunekitError, match="in the way"):  # where a replace would set the output aside
        _write(tmp_path / "out", "x")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_links_and_mount_points_are_refused_before_any_work(tmp_path):
    real = tmp_path / "real"
    _write(real, "x")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(PrunekitError, match="is a link"):
        _write(tmp_path / "link", "y", overwrite=True)
    assert (real / "result.txt").read_text() == "x" and (tmp_path / "link").is_symlink()
    if os.path.ismount("/proc"):
        with pytest.raises(PrunekitError, match="mount point"):
            _write("/proc", "y", overwrite=True)


def test_json_outputs_replace_only_prunekits_json(tmp_path):
    victim = tmp_path / "model.safetensors"
    victim.write_bytes(b"weights")
    with pytest.raises(PrunekitError, match="exists"):
        check_output_file(victim, overwrite=False)
    with pytest.raises(PrunekitError, match="not a file prunekit wrote"):
        check_output_file(victim, overwrite=True)
    ours = tmp_path / "e.json"
    ours.write_text('{"versions": {"prunekit": "0.1.0"}}')
    assert check_output_file(ours, overwrite=True) == ours
    assert check_output_file(tmp_path / "new" / "x.json", overwrite=False).parent.is_dir()
    with pytest.raises(PrunekitError, match="folder"):
        check_output_file(tmp_path, overwrite=True)


def test_a_killed_run_leaves_the_previous_output_and_its_temporary_goes_next_time(tmp_path):
    out = tmp_path / "out"
    _write(out, "previous")
    code = f"""
import time
from prunekit.fsutil import atomic_dir
with atomic_dir({str(out)!r}, overwrite=True) as tmp:
    (tmp / "big.bin").write_bytes(b"x" * (1 << 20))
    print("writing", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    with pytest.raises(PrunekitError, match="another prunekit run is writing"):
        _write(out, "racer", overwrite=True)  # the lock holds while the first run works
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "result.txt").read_text() == "previous" and any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())
    _write(out, "next", overwrite=True)  # the dead run's lock went with it; its temporary is removed now
    assert (out / "result.txt").read_text() == "next" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_files_get_the_umask_mode_not_0600(tmp_path):
    """safetensors and mkstemp create files readable by their owner only; an output is for sharing."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "w.safetensors"))
            (tmp / "sub").mkdir()
            (tmp / "sub" / "x.json").write_text("{}")
            os.chmod(tmp / "sub" / "x.json", 0o600)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
