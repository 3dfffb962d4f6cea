"""Files and folders: atomic output folders (a run leaves a complete one or none), hashes, the cache folder."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import PrunekitError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted models live: ``$PRUNEKIT_CACHE`` or ``~/.cache/prunekit``."""
    if os.environ.get("PRUNEKIT_CACHE"):
        return Path(os.environ["PRUNEKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prunekit"


def regular_file(path: str | Path) -> Path:
    """``path`` when it is a regular file (after links): a FIFO or a device would block or never end."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise PrunekitError(f"no file at {path}") from e
    if not stat.S_ISREG(mode):
        raise PrunekitError(f"{path} is not a regular file; prunekit reads only regular files")
    return path


def file_inside(folder: str | Path, name: str) -> Path:
    """``folder / name`` when it is a regular file that lies inside ``folder`` (after links): a model or run folder
    is data, so a name it gives (an index's shard, a file to copy) never leads out of it, and nothing but a regular
    file is read (a FIFO or a device would block or never end). PrunekitError otherwise."""
    root = Path(folder).resolve()
    path = Path(folder) / name
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # missing, or a loop of links
        raise PrunekitError(f"{path}: cannot be read ({e.__class__.__name__})") from e
    if not real.is_relative_to(root):
        raise PrunekitError(f"{path} leads outside {folder} (to {real}); prunekit reads only files inside it")
    return regular_file(path)


def side_files(folder: str | Path | None) -> list[Path]:
    """A model folder's files other than its safetensors weights (config, tokenizer, manifest) that go along with
    it into an output: regular files only, never links."""
    folder = Path(folder) if folder is not None else None
    if folder is None or not folder.is_dir():
        return []
    return [f for f in sorted(folder.iterdir()) if f.suffix != ".safetensors" and f.is_file() and not f.is_symlink()]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


OWNER_FILE = ".prunekit-output"  # in every folder prunekit writes, listing what it wrote: --overwrite replaces only that
TEMP_MARKER = ".prunekit-temporary"  # in every temporary or set-aside folder: only those are ever tidied away
# What prunekit writes into an output folder, by name: an output marked by an earlier prunekit (no list of files)
# is replaced only when it holds nothing else
WRITTEN_NAMES = ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
                 "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                 "chat_template.*", "masks.safetensors", "quant.safetensors", "manifest.json", "tasks.json",
                 "weights.prunekit.safetensors", "results.json", "report.md", "*.png", "lottery.json")


def _entries(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative, links not followed), prunekit's markers aside."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} - {OWNER_FILE, TEMP_MARKER}


def _names_prunekit(path: Path) -> bool:
    try:
        return "prunekit" in json.loads(regular_file(path).read_text())["versions"]
    except (OSError, ValueError, KeyError, TypeError, PrunekitError):
        return False


def _is_prunekit_output(folder: Path) -> bool:
    """An empty folder, or one prunekit wrote holding nothing but what it wrote there: the files its marker lists
    (or, marked by an earlier prunekit, or unmarked with a manifest naming prunekit, only names prunekit writes)."""
    entries = _entries(folder)
    if not entries:
        return True
    owner = folder / OWNER_FILE
    listed = None
    if owner.is_file() and not owner.is_symlink():
        try:
            listed = json.loads(owner.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    elif not (len(entries) > 1 and _names_prunekit(folder / "manifest.json")):  # more than a copied manifest
        return False
    if isinstance(listed, list):
        return entries <= set(listed)
    return all(any(fnmatch.fnmatch(e, pattern) for pattern in WRITTEN_NAMES) for e in entries)


def _refuse_path(out: Path) -> None:
    """An output path prunekit cannot replace the way it does (a rename beside it): refused before any work."""
    if out.is_symlink():
        raise PrunekitError(f"output path {out} is a link; give the folder it leads to ({os.path.realpath(out)})")
    if out.is_dir() and os.path.ismount(out):
        raise PrunekitError(f"output folder {out} is a mount point, which cannot be replaced; give a folder inside it")


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Fail early (before any work) when ``out`` may not be written: it exists without ``overwrite``, is not
    a folder, or is a folder prunekit did not write (``--overwrite`` never deletes a user's files)."""
    out = Path(out)
    _refuse_path(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise PrunekitError(f"output path {out} exists and is not a folder")
    if not overwrite:
        raise PrunekitError(f"output folder {out} exists (pass --overwrite to replace it)")
    if not _is_prunekit_output(out):
        held = sorted(p.name for p in out.iterdir())
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise PrunekitError(f"output folder {out} is not a prunekit output (it holds {shown}): --overwrite replaces "
                            "only folders prunekit wrote, holding only what it wrote; remove it yourself or choose "
                            "another --out")
    return out


def check_output_file(out: str | Path, overwrite: bool) -> Path:
    """Fail early when the JSON file ``out`` may not be written: it exists without ``overwrite``, or it is not a
    file prunekit wrote (a manifest naming prunekit); its folder must be writable."""
    out = Path(out)
    if out.is_symlink() or out.is_dir():
        raise PrunekitError(f"--out {out} is a {'link' if out.is_symlink() else 'folder'}; give a JSON file name")
    if out.exists():
        if not overwrite:
            raise PrunekitError(f"{out} exists (pass --overwrite to replace it)")
        if not _names_prunekit(out):
            raise PrunekitError(f"{out} is not a file prunekit wrote: --overwrite replaces only prunekit's JSON; "
                                "choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise PrunekitError(f"cannot write in {out.parent}")
    return out


def _leftovers(out: Path) -> tuple[Path, list[Path]]:
    """The old-output and temporary folders a run writing ``out`` uses beside it."""
    return out.parent / f".{out.name}.old", sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _ours(folder: Path) -> bool:
    marker = folder / TEMP_MARKER
    return folder.is_dir() and not folder.is_symlink() and marker.is_file() and not marker.is_symlink()


def _recover(out: Path) -> None:
    """Tidy what an interrupted run left beside ``out`` (this run holds the lock, so no other is writing): a
    previous output set aside but not replaced is put back; temporaries are removed. Only folders carrying
    prunekit's temporary marker are touched: a user's folder of the same name stays as it is."""
    old, temporaries = _leftovers(out)
    if _ours(old) and not out.exists():
        old.rename(out)
        (out / TEMP_MARKER).unlink()
        log.warning("%s: an earlier run was interrupted while replacing this folder; its previous content is back", out)
    elif _ours(old):
        shutil.rmtree(old, ignore_errors=True)  # the replace finished; only the clean-up did not
    for tmp in filter(_ours, temporaries):
        log.warning("%s: removing %s, left by an interrupted run", out, tmp.name)
        shutil.rmtree(tmp, ignore_errors=True)


class OutputClaim:
    """The right to write one output folder during a run: checked, locked against other runs and tidied
    of interrupted runs' leftovers by ``claim_output``; ``write()`` fills a temporary folder and swaps it in."""

    def __init__(self, path: Path, overwrite: bool) -> None:
        self.path, self.overwrite = path, overwrite

    def require_space(self, nbytes: int) -> None:
        """Raise before the work when the destination lacks room for about ``nbytes`` (plus 5%)."""
        free = shutil.disk_usage(self.path.parent).free
        if free < nbytes * 1.05:
            raise PrunekitError(f"{self.path.parent} has {free / 2**20:.0f} MB free; the output needs about "
                                f"{nbytes / 2**20:.0f} MB")

    @contextlib.contextmanager
    def write(self) -> Iterator[Path]:
        """Yield a temporary folder beside the output; once the block succeeds it becomes the output. The
        previous output is moved aside first and deleted last: a crash in between leaves it to be put back
        by the next claim."""
        out = check_output_dir(self.path, self.overwrite)
        old, _ = _leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        (tmp / TEMP_MARKER).write_text("a temporary of a prunekit run; the next run on this output removes it\n")
        try:
            yield tmp
            written = sorted(_entries(tmp))
            (tmp / OWNER_FILE).write_text(json.dumps({"written_by": "prunekit", "files": written}, indent=0) + "\n")
            for f in tmp.rglob("*"):  # safetensors and mkstemp create files 0600: give them the umask's mode
                if f.is_file():
                    f.chmod(0o666 & ~umask)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):  # out of space, a read-only file system: one line, nothing half-written
                raise PrunekitError(f"writing {out} failed: {e.strerror or e}") from e
            raise
        _swap(tmp, out, old)


def _swap(tmp: Path, out: Path, old: Path) -> None:
    """``tmp`` becomes ``out``; a previous ``out`` is set aside (marked, so a crash leaves it to be put back) and
    deleted last. A failing rename puts everything back as it was."""
    try:
        if out.exists():
            (out / TEMP_MARKER).write_text("a previous output set aside while it is replaced\n")
            out.rename(old)
        (tmp / TEMP_MARKER).unlink()
        tmp.rename(out)
    except OSError as e:
        if _ours(old) and not out.exists():
            old.rename(out)
        (out / TEMP_MARKER).unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise PrunekitError(f"replacing {out} failed: {e.strerror or e}") from e
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def claim_output(out: str | Path, overwrite: bool = False) -> Iterator[OutputClaim]:
    """Check that ``out`` may be written, lock it for the run (another run on it fails at once), put back or
    remove what interrupted runs left beside it; all before any work. The lock file sits beside ``out``."""
    out = Path(out)
    lock = out.parent / f".{out.name}.lock"
    fd = _lock(lock, out)
    try:
        _recover(out)
        check_output_dir(out, overwrite)
        old, _ = _leftovers(out)
        if os.path.lexists(old):  # where a replace sets the previous output aside: a user's, left as it is
            raise PrunekitError(f"{old} is in the way (prunekit did not make it): move it, or choose another --out")
        yield OutputClaim(out, overwrite)
    finally:
        lock.unlink(missing_ok=True)  # while still held: a run that opened it meanwhile sees it gone, retries
        os.close(fd)


def _lock(lock: Path, out: Path) -> int:
    """An open descriptor holding an exclusive lock on ``lock``, which still names the locked file."""
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise PrunekitError(f"cannot write in {lock.parent}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PrunekitError(f"another prunekit run is writing {out}; wait for it or choose another --out") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file as we locked it: lock the new one


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """``claim_output`` and ``write`` in one: a temporary folder that becomes ``out`` if the block succeeds."""
    with claim_output(out, overwrite) as claim, claim.write() as tmp:
        yield tmp


def write_file_atomic(path: str | Path, data: str) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename: all or nothing."""
    path = Path(path)
    if path.is_dir():
        raise PrunekitError(f"{path} is a folder; give a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
