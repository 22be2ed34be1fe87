"""Flower's local Simulation Runtime, started and stopped by us: every process by PID.

``flwr run <app> local`` lazily starts a *detached* ``flower-superlink --simulation`` on fixed
ports (39091/39093) that outlives the command, and that SuperLink starts ``flwr-simulation``,
which starts Ray (GCS, raylet, workers). :class:`LocalSimulation` instead

1. writes a run-local ``FLWR_HOME`` (``<work_dir>/flwr_home/config.toml``: a ``local``
   connection) so nothing touches ``~/.flwr``;
2. starts that same SuperLink itself, on a free port (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``
   tells the ``flwr`` CLI where it is; Runtime, Control and Fleet APIs share it), in its own session,
   with runtime dependency installation and the update check disabled, and waits for /health;
3. runs ``flwr run <app> local --federation-config "num-supernodes=N ..." --run-config
   <toml> --stream`` (the CLI finds the SuperLink running and uses it);
4. records every descendant of the SuperLink while the run lasts (``/proc``), and on exit
   (normal, error, timeout or Ctrl-C) sends SIGTERM, then SIGKILL, to each recorded PID that is
   still the same process (same start time), and writes them to ``processes.json``.

For an existing Ray cluster, ``ray_address`` is exported as ``RAY_ADDRESS`` to the SuperLink,
whose simulation process then joins that cluster in ``ray.init()`` instead of starting one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalSimulation", "SimulationSettings", "process_alive", "descendants", "track_tree", "stop_tracked",
           "free_port"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class SimulationSettings:
    """Runtime settings (configs/federation/*.yaml)."""

    num_supernodes: int
    client_num_cpus: int = 1
    client_num_gpus: float = 0.0
    ray_num_cpus: int | None = None
    ray_address: str | None = None
    startup_timeout_s: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def federation_config(self) -> str:
        items = {"num-supernodes": self.num_supernodes, "client-resources-num-cpus": int(self.client_num_cpus),
                 "client-resources-num-gpus": float(self.client_num_gpus)}
        if self.ray_num_cpus and not self.ray_address:
            items["init-args-num-cpus"] = int(self.ray_num_cpus)
        return " ".join(f"{k}={v}" for k, v in items.items())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of a live process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    if fields[0] == "Z":  # zombie: already dead
        return None
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> dict[int, int]:
    """``{pid: start time}`` of ``root`` and every live descendant (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry))
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        stat = _proc_stat(pid)
        if stat is None:
            continue
        found[pid] = stat[1]
        stack.extend(parents.get(pid, []))
    return found


def process_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is still the process that had ``start_time`` (not a reused PID)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == start_time


class LocalSimulation:
    """Context manager: a private SuperLink in simulation mode, and ``flwr run`` against it."""

    def __init__(self, app_dir: str | Path, work_dir: str | Path, settings: SimulationSettings, log: Log = print) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.settings = settings
        self.log = log
        self.flwr_home = self.work_dir / "flwr_home"
        self.http_port, self.control_port = free_port(), free_port()
        self.superlink: subprocess.Popen | None = None
        self.tracked: dict[int, dict] = {}  # pid -> {"start": ticks, "cmd": str}
        self._lock = threading.Lock()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None

    # environment ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = os.environ.copy()
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env.update({
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "RAY_DEDUP_LOGS": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        })
        if self.settings.ray_address:
            env["RAY_ADDRESS"] = self.settings.ray_address
        env.update(self.settings.extra_env)
        return env

    def _write_flwr_home(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> LocalSimulation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1.0) as response:
                return 200 <= response.status < 300
        except OSError:
            return False

    def start(self) -> None:
        self._write_flwr_home()
        runtime = self.flwr_home / "local-superlink"
        runtime.mkdir(parents=True, exist_ok=True)
        command = [
            "flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(self.http_port),
            "--database", str(runtime / "state.db"), "--log-file", str(runtime / "superlink.log"),
            "--disable-runtime-dependency-installation",
        ]
        self.log(f"[ecs-simulate] starting flower-superlink (simulation) on 127.0.0.1:{self.http_port}")
        self.superlink = subprocess.Popen(command, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        self._track(self.superlink.pid)
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while not self._healthy():
            if self.superlink.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with {self.superlink.returncode}; see {runtime / 'superlink.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"flower-superlink not healthy within {self.settings.startup_timeout_s:.0f}s")
            time.sleep(0.2)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _track(self, root: int) -> None:
        with self._lock:
            track_tree(root, self.tracked)

    def _watch(self) -> None:
        while not self._stop_watch.wait(0.5):
            if self.superlink is not None:
                self._track(self.superlink.pid)

    def run(self, run_config_file: Path, *, timeout: float, on_line: Callable[[str], None]) -> int:
        """``flwr run <app> local ... --stream``; each output line goes to ``on_line``.

        Returns the CLI's exit code (124 after ``timeout``). The run's own outcome is in its
        run directory (the ServerApp writes metrics.json only when it completes).
        """
        command = ["flwr", "run", str(self.app_dir), "local", "--federation-config", self.settings.federation_config(),
                   "--run-config", str(run_config_file), "--stream"]
        process = subprocess.Popen(command, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   cwd=self.app_dir, bufsize=1)
        with self._lock:
            self.tracked[process.pid] = {"start": (_proc_stat(process.pid) or (0, 0))[1], "cmd": " ".join(command)[:300]}
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in _lines(process.stdout):
                on_line(line)
            code = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        return 124 if code == -signal.SIGKILL else code

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the SuperLink, then every recorded descendant still alive; SIGKILL after ``grace_s``."""
        self._stop_watch.set()
        if self.superlink is not None and self.superlink.poll() is None:
            self._track(self.superlink.pid)
        with self._lock:
            tracked = dict(self.tracked)
        left = stop_tracked(tracked, [self.superlink] if self.superlink is not None else [], grace_s=grace_s)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "processes.json").write_text(json.dumps(
            {"processes": [{"pid": pid, **info} for pid, info in sorted(tracked.items())], "left_running": left}, indent=1) + "\n")
        if left:
            self.log(f"[ecs-simulate] WARNING: processes still running after stop: {left}")
        else:
            self.log(f"[ecs-simulate] stopped {len(tracked)} processes (SuperLink, simulation, Ray)")


def track_tree(root: int, tracked: dict[int, dict]) -> None:
    """Add ``root`` and its live descendants to ``tracked`` (``pid -> {"start": ticks, "cmd": str}``)."""
    for pid, start in descendants(root).items():
        if pid not in tracked:
            tracked[pid] = {"start": start, "cmd": _cmdline(pid)[:300]}


def stop_tracked(tracked: dict[int, dict], children: list[subprocess.Popen], grace_s: float = 10.0) -> list[int]:
    """Stop every recorded process that is still the same process; return the PIDs left running.

    SIGTERM goes first to our direct ``children`` (so they can shut down their own subprocesses),
    then to every other recorded PID; whatever still runs after ``grace_s`` gets SIGKILL. The
    ``children`` are reaped (no zombies).
    """
    alive = {pid: info for pid, info in tracked.items() if process_alive(pid, info["start"])}
    first = {child.pid for child in children}
    for pid in sorted(alive, key=lambda p: p not in first):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(process_alive(p, i["start"]) for p, i in alive.items()):
        for child in children:
            child.poll()  # reap our direct children
        time.sleep(0.1)
    for pid, info in alive.items():
        if process_alive(pid, info["start"]):
            _signal(pid, signal.SIGKILL)
    for child in children:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    time.sleep(0.2)
    return [pid for pid, info in tracked.items() if process_alive(pid, info["start"])]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _lines(stream) -> Iterator[str]:  # noqa: ANN001
    for line in iter(stream.readline, ""):
        yield line.rstrip("\n")
