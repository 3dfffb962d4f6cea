"""Running generated code against its tests, never inside prunekit's process: a separate Python process per
program, in a fresh temporary folder, with a wall-clock limit, CPU-time, memory and file-size limits, no network,
no new processes and no writes outside its folder; the whole process group is killed at the limit.

The guard inside the child (what HumanEval's own harness does: ``reliability_guard``) disables process creation,
sockets, and file writes, removals and renames outside the temporary folder before the program runs. It is a
protection against the accidents generated code makes (infinite loops, fork bombs, stray writes), not a security
boundary against code written to escape it: run untrusted models' code in a container or VM as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MEMORY_BYTES = 1 << 30  # address space of the child
FILE_BYTES = 1 << 20  # largest file it may write (inside its folder)

# Runs first in the child: limits, then the guard, then the program from the file named in argv[1].
_GUARD = r'''
import builtins, os, resource, shutil, socket, subprocess, sys
cpu, memory, fsize = (int(v) for v in sys.argv[2:5])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
home = os.path.realpath(os.getcwd())
source = open(sys.argv[1]).read()

def refuse(*args, **kwargs):
    raise PermissionError("not allowed in the sandbox")

def inside(path):
    real = os.path.realpath(os.path.join(home, os.fspath(path)))
    return real == home or real.startswith(home + os.sep)

_open = builtins.open
def guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, int) or (set(mode) & set("wax+") and not inside(file)):
        raise PermissionError("writing outside the sandbox folder")
    return _open(file, mode, *args, **kwargs)

_os_open = os.open
def guarded_os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not inside(path):
        raise PermissionError("writing outside the sandbox folder")
    return _os_open(path, flags, *args, **kwargs)

builtins.open = guarded_open
os.open = guarded_os_open
for name in ("fork", "forkpty", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
             "spawnvpe", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "system",
             "popen", "posix_spawn", "posix_spawnp", "kill", "killpg", "remove", "unlink", "rmdir", "removedirs",
             "rename", "renames", "replace", "chmod", "chown", "link", "symlink", "truncate", "putenv", "chdir",
             "fchdir", "setuid", "mkfifo", "mknod"):
    if hasattr(os, name):
        setattr(os, name, refuse)
subprocess.Popen = refuse
shutil.rmtree = shutil.move = shutil.copy = shutil.copyfile = refuse
socket.socket = socket.create_connection = refuse
for name in ("ctypes", "_ctypes", "multiprocessing", "_posixsubprocess", "resource"):
    sys.modules[name] = None
del name
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
'''


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # "passed", "timeout", "failed: <last line of stderr>"


def run_program(code: str, timeout: float = 5.0) -> Outcome:
    """Run ``code`` (a program and its tests: it passes when it exits 0) in a sandboxed child process."""
    with tempfile.TemporaryDirectory(prefix="prunekit-sandbox-") as folder:
        program = Path(folder) / "program.py"
        program.write_text(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder, "PYTHONDONTWRITEBYTECODE": "1",
               "no_proxy": "*", "http_proxy": "http://0.0.0.0:9", "https_proxy": "http://0.0.0.0:9"}
        cpu = max(1, int(timeout) + 1)
        proc = subprocess.Popen([sys.executable, "-I", "-c", _GUARD, str(program), str(cpu), str(MEMORY_BYTES),
                                 str(FILE_BYTES)], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Outcome(False, "timeout")
        finally:
            _kill_group(proc)  # anything it left running in its group
        if proc.returncode == 0:
            return Outcome(True, "passed")
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return Outcome(False, f"failed: {last[0][:200]}")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
