"""Output folders: all or nothing, never a user's folder replaced, an interrupted replace recovered, one run at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from prunekit.errors import PrunekitError
from prunekit.fsutil import OWNER_FILE, atomic_dir, claim_output


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
    _write(older, "fine", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "older", "out"]  # no temporaries, no locks


def test_an_interrupted_replace_is_put_back_and_temporaries_removed(tmp_path, caplog):
    out = tmp_path / "out"
    _write(out, "previous")
    # a crash between the two renames of a replace: the previous output moved aside, the new one not in place
    out.rename(tmp_path / ".out.old")
    (tmp_path / ".out.tmp-abc123").mkdir()
    (tmp_path / ".out.tmp-abc123" / "half.bin").write_bytes(b"x" * 1000)
    with caplog.at_level("WARNING"), claim_output(out, overwrite=True):
        assert (out / "result.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert "interrupted while replacing" in caplog.text and "left by an interrupted run" in caplog.text
    (tmp_path / ".out.old").mkdir()  # a crash after the replace, before the clean-up: the old copy just goes
    with claim_output(out, overwrite=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


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
