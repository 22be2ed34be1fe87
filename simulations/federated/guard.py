"""Run a command so that nothing it starts outlives it, however its starter ends.

Flower's processes leave the tree and the session they were started in: ``flower-superlink``
starts ``flower-superexec`` in a session of its own, ``flwr-simulation`` under it starts Ray
(GCS, raylet, workers), and a process whose parent dies is re-parented to init. Starting the
SuperLink with ``start_new_session=True`` and killing that group misses the superexec session,
and nothing at all is stopped when the starter is itself killed with SIGKILL (a
``subprocess.run`` timeout, a pytest timeout, the OOM killer): measured, a SuperLink,
its superexec, ``flwr-simulation`` and a Ray actor kept running after ``ecs-simulate`` was
killed that way.

:class:`Guarded` therefore starts ``python -P guard.py -- <command>`` (this file) in a new
session. The guard

1. makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): an orphaned descendant, whatever
   session it made, is re-parented to the guard instead of init, so it stays in the guard's tree;
2. starts the command and every 0.5 s records each descendant (PID, start time, session,
   command line) in a JSON record file (rewritten whenever it changes);
3. stops the whole tree as soon as the command exits, the guard gets SIGTERM, SIGINT or SIGHUP,
   or its standard input reaches end of file: SIGTERM to the command and to every other
   descendant still alive (and to any process still in a session one of them led), SIGKILL to
   what is left after the grace period. Its standard input is a pipe whose only write end the
   starter holds, so the pipe closes when the starter ends, however it ends;
4. exits with the command's exit code (128 + N when signal N ended it).

Only the standard library is imported here: the guard starts in milliseconds. Linux only (/proc,
prctl), as the rest of the runtime.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Guarded", "ProcStat", "proc_stat", "process_alive", "descendants", "cmdline", "main"]

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# how often the guard looks at its tree: one pass over /proc costs ~7 ms of CPU on a busy 2-core
# machine, and a loopback federation runs 5 guards. End of input and the command's exit are seen at once.
POLL_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# -- /proc --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the guard needs."""

    ppid: int
    sid: int  # session id: the PID of the session's leader
    start: int  # start time in clock ticks since boot: with the PID, identifies the process


def _read(path: str) -> bytes:
    """A small /proc file in one read (os.read: a third of the cost of Path.read_text per call)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def proc_stat(pid: int) -> ProcStat | None:
    """The stat of a live process; None if it is gone or a zombie (already dead)."""
    try:
        raw = _read(f"/proc/{pid}/stat").decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return ProcStat(ppid=int(fields[1]), sid=int(fields[3]), start=int(fields[19]))


def all_processes() -> dict[int, ProcStat]:
    """Every live process of the machine, from one pass over /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_stat(int(entry))
            if info is not None:
                table[int(entry)] = info
    return table


def descendants(root: int, table: dict[int, ProcStat] | None = None) -> dict[int, int]:
    """``{pid: start time}`` of ``root`` and every live descendant."""
    table = all_processes() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in table and pid not in found:
            found[pid] = table[pid].start
            stack.extend(children.get(pid, []))
    return found


def process_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is still the process that had ``start_time`` (not a reused PID)."""
    info = proc_stat(pid)
    return info is not None and info.start == start_time


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' when gone)."""
    try:
        return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the guard process --------------------------------------------------------------------------
class _Tree:
    """What the guard has seen below itself, and how to stop it."""

    def __init__(self, guard_pid: int) -> None:
        self.guard_pid = guard_pid
        self.seen: dict[int, dict] = {}  # pid -> {"start", "sid", "cmd"}
        self.killed: set[int] = set()  # what still ran after the grace period (SIGKILL)
        self._fresh: set[int] = set()  # first seen in the last scan: maybe between fork and exec

    def scan(self) -> bool:
        """Record every descendant, and every process in a session one of them led; True if anything changed."""
        table = all_processes()
        found = descendants(self.guard_pid, table)
        found.pop(self.guard_pid, None)
        for pid, info in table.items():
            if pid != self.guard_pid and self._in_our_session(info, table):
                found.setdefault(pid, info.start)
        changed, fresh = False, set()
        for pid, start in found.items():
            known, info = self.seen.get(pid), table[pid]
            if known is None or known["start"] != start:
                self.seen[pid] = {"start": start, "sid": info.sid, "cmd": cmdline(pid)[:300]}
                fresh.add(pid)
            elif pid in self._fresh or known["sid"] != info.sid:
                # seen between fork and exec it showed its parent's command line; or it left the session since
                known.update(sid=info.sid, cmd=cmdline(pid)[:300] or known["cmd"])
            else:
                continue
            changed = True
        self._fresh = fresh
        return changed

    def _in_our_session(self, info: ProcStat, table: dict[int, ProcStat]) -> bool:
        """Whether ``info`` is in a session that the guard or a process it saw leads (or led).

        Only matters without the subreaper, where members of a session whose leader died are
        re-parented to init. The leader's PID may since have been reused by another session's
        leader: members started after that process are not ours.
        """
        if info.sid == self.guard_pid:
            return True
        leader = self.seen.get(info.sid)
        if leader is None or leader["sid"] != info.sid:
            return False
        now = table.get(info.sid)
        reused_at = now.start if now is not None and now.start != leader["start"] else float("inf")
        return leader["start"] <= info.start < reused_at

    def alive(self) -> list[int]:
        return [pid for pid, info in self.seen.items() if process_alive(pid, info["start"])]

    def stop(self, command_pid: int | None, grace_s: float, reap: Callable[[], None]) -> list[int]:
        """SIGTERM the command, then everything else alive; SIGKILL after ``grace_s``; return PIDs left.

        ``command_pid``: the command while not yet reaped (then the PID is still ours), else None.
        """
        self.scan()
        terminated: set[int] = set()
        if command_pid is not None:
            _signal(command_pid, signal.SIGTERM)  # first: it may stop its own children cleanly
            terminated.add(command_pid)
        deadline = time.monotonic() + grace_s
        while True:
            reap()
            self.scan()  # processes started while stopping (a raylet restarting a worker) are stopped too
            alive = self.alive()
            for pid in alive:
                if pid not in terminated:
                    _signal(pid, signal.SIGTERM)
                    terminated.add(pid)
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for _ in range(3):  # SIGKILL cannot be ignored; a few passes catch last-moment children
            for pid in self.alive():
                _signal(pid, signal.SIGKILL)
                self.killed.add(pid)
            time.sleep(0.2)
            reap()
            self.scan()
        return self.alive()


class _Guard:
    """The guard's main loop (see the module docstring)."""

    def __init__(self, command: Sequence[str], record: Path, grace_s: float) -> None:
        self.command = list(command)
        self.record = record
        self.grace_s = grace_s
        self.tree = _Tree(os.getpid())
        self.child: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.reason = ""

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.reason = self.reason or f"signal {signal.Signals(signum).name}"

    def _reap(self) -> None:
        """Collect every exited child (as subreaper, orphans are ours too); note the command's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                code = os.waitstatus_to_exitcode(status)
                self.exit_code = 128 - code if code < 0 else code
                self.child.returncode = code  # reaped here: Popen must not wait for it again

    def _stdin_closed(self) -> bool:
        """Wait up to POLL_S for the starter's pipe; True once it reached end of file.

        Only a pipe counts: run by hand with a terminal or /dev/null as input, the guard stops
        when the command exits or on a signal.
        """
        try:
            if not stat.S_ISFIFO(os.fstat(0).st_mode):
                raise OSError("standard input is not a pipe")
            readable, _, _ = select.select([0], [], [], POLL_S)
            return bool(readable) and not os.read(0, 4096)
        except OSError:
            time.sleep(POLL_S)
            return False

    def _write(self, **extra: object) -> None:
        data = {"guard": os.getpid(), "command": self.command, "pid": self.child.pid if self.child else None,
                "processes": [{"pid": pid, **info} for pid, info in sorted(self.tree.seen.items())], **extra}
        tmp = self.record.with_name(self.record.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.record)  # readers never see half a file

    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        libc = ctypes.CDLL(None, use_errno=True)
        subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        try:
            self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            print(f"guard: cannot start {self.command[0]}: {exc}", file=sys.stderr, flush=True)
            self._write(exit_code=127, reason="not started", left_running=[])
            return 127
        self.tree.scan()
        self._write(subreaper=subreaper)
        while not self.reason:
            self._reap()
            if self.exit_code is not None:
                self.reason = "command exited"
            elif self._stdin_closed():
                self.reason = "starter gone (end of input)"
            elif self.tree.scan():
                self._write(subreaper=subreaper)
        left = self.tree.stop(self.child.pid if self.exit_code is None else None, self.grace_s, self._reap)
        self._reap()
        code = self.exit_code if self.exit_code is not None else 128 + signal.SIGTERM
        self._write(subreaper=subreaper, exit_code=code, reason=self.reason, killed=sorted(self.tree.killed),
                    left_running=left)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -P simulations/federated/guard.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", type=Path, required=True, help="JSON file: every process seen, then the outcome")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (default 10)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return _Guard(command, args.record, args.grace).run()


# -- the starter's side -------------------------------------------------------------------------
class Guarded:
    """``command`` started under a guard in a new session; :meth:`stop` ends its whole tree.

    The guard's standard input is a pipe held only here (``subprocess`` closes inherited
    descriptors in other children): when this process ends, even by SIGKILL, the pipe closes and
    the guard stops the tree. A process forked from this one (``os.fork``, multiprocessing's fork
    start method) would hold it too, and delay that until it exits.
    """

    def __init__(self, command: Sequence[str], record: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | str | None = None, stdout=None, stderr=None, text: bool = False,  # noqa: ANN001
                 grace_s: float = 10.0) -> None:
        self.command = list(command)
        self.record_path = Path(record)
        self.grace_s = grace_s
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        # this file as a script (-P: its folder not on sys.path), so the guard needs neither the
        # package importable in ``env`` nor anything beyond the standard library
        guard = [sys.executable, "-P", str(Path(__file__).resolve()), "--record", str(self.record_path),
                 "--grace", str(grace_s), "--", *self.command]
        self.process = subprocess.Popen(guard, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                                        text=text, bufsize=1 if text else -1, start_new_session=True)
        self.start_time = (proc_stat(self.process.pid) or ProcStat(0, 0, 0)).start

    @property
    def pid(self) -> int:
        """The guard's PID (also its session and process group)."""
        return self.process.pid

    @property
    def stdout(self):  # noqa: ANN201
        return self.process.stdout

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        """The command's exit code once the guard has stopped its tree, else None."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def record(self) -> dict:
        """The guard's record: ``processes`` (every one it saw) and, once it ended, the outcome."""
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {"guard": self.pid, "command": self.command, "processes": []}

    def processes(self) -> list[dict]:
        """Every process of this tree: the guard itself, then what it recorded."""
        own = {"pid": self.pid, "start": self.start_time, "sid": self.pid, "cmd": "guard: " + " ".join(self.command)[:290]}
        return [own, *self.record().get("processes", [])]

    def request_stop(self) -> None:
        """Close the guard's input: it stops the tree and exits (returns at once)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def stop(self) -> dict:
        """Stop the tree and wait for the guard; returns its final record.

        Should the guard itself not finish in time, its session is killed (what it recorded is
        still returned; its ``left_running`` then says what survived).
        """
        self.request_stop()
        try:
            self.process.wait(timeout=self.grace_s + 20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait(timeout=10)
        record = self.record()
        record["left_running"] = [p["pid"] for p in self.processes() if process_alive(p["pid"], p["start"])]
        return record


if __name__ == "__main__":
    sys.exit(main())
