"""Find a run's processes from the outside, independently of what started them: by their environment.

Every process of a run inherits the environment its starter gave it (FLWR_HOME=<run folder>, a
marker variable), whatever tree or session it ends up in, and ``/proc/<pid>/environ`` keeps the
environment a process started with. Tests use this to check that nothing of a run is left,
without trusting the run's own bookkeeping.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X")


def processes_with_env(key: str, value: str) -> dict[int, str]:
    """``{pid: command line}`` of every live process (not this one) whose environment has ``key=value``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and not _zombie(int(entry)):
            if _environ(int(entry)).get(key) == value:
                found[int(entry)] = _cmdline(int(entry))
    return found


def wait_until_gone(key: str, value: str, timeout: float) -> dict[int, str]:
    """Poll until no process has ``key=value``; return what is still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := processes_with_env(key, value)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def kill_all_with_env(key: str, value: str) -> None:
    """SIGKILL every process with ``key=value``: a failed test must not leave its run behind."""
    for pid in processes_with_env(key, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
