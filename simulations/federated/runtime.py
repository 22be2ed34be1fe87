"""Flower's local Simulation Runtime, started and stopped by us: every process, however we end.

``flwr run <app> local`` lazily starts a *detached* ``flower-superlink --simulation`` on fixed
ports (39091/39093) that outlives the command; that SuperLink starts ``flower-superexec`` (in a
session of its own), which starts ``flwr-simulation``, which starts Ray (GCS, raylet, workers).
:class:`LocalSimulation` instead

1. writes a run-local ``FLWR_HOME`` (``<work_dir>/flwr_home/config.toml``: a ``local``
   connection) so nothing touches ``~/.flwr``;
2. starts that same SuperLink itself, on a free port (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``
   tells the ``flwr`` CLI where it is; Runtime, Control and Fleet APIs share it), with runtime
   dependency installation and the update check disabled, and waits for /health;
3. runs ``flwr run <app> local --federation-config "num-supernodes=N ..." --run-config
   <toml> --stream`` (the CLI finds the SuperLink running and uses it);
4. starts both under a guard (:mod:`simulations.federated.guard`): a process in its own session
   that keeps every descendant in its tree (child subreaper), records them, and stops them all
   (SIGTERM, then SIGKILL) when we stop it, when the command exits, or when this process ends in
   any way, SIGKILL included. On exit (normal, error, timeout, Ctrl-C or SIGTERM, which
   ``ecs-simulate`` turns into Ctrl-C) both trees are stopped and every process is listed in
   ``processes.json`` with those ``left_running`` (none).

For an existing Ray cluster, ``ray_address`` is exported as ``RAY_ADDRESS`` to the SuperLink,
whose simulation process then joins that cluster in ``ray.init()`` instead of starting one; the
cluster's own processes are not ours to stop.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from simulations.federated.guard import Guarded, descendants, process_alive

__all__ = ["LocalSimulation", "SimulationSettings", "process_alive", "descendants", "free_port", "stop_guards"]

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


class LocalSimulation:
    """Context manager: a private SuperLink in simulation mode, and ``flwr run`` against it."""

    def __init__(self, app_dir: str | Path, work_dir: str | Path, settings: SimulationSettings, log: Log = print) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.settings = settings
        self.log = log
        self.flwr_home = self.work_dir / "flwr_home"
        self.http_port, self.control_port = free_port(), free_port()
        self.superlink: Guarded | None = None
        self.guards: list[Guarded] = []  # the SuperLink's and each ``flwr run``'s

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
        self.superlink = self._guarded(command, "superlink", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while not self._healthy():
            if self.superlink.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with {self.superlink.returncode}; see {runtime / 'superlink.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"flower-superlink not healthy within {self.settings.startup_timeout_s:.0f}s")
            time.sleep(0.2)

    def _guarded(self, command: list[str], name: str, **popen: object) -> Guarded:
        """``command`` under a guard; its record in ``<flwr_home>/guards/<name>.json``."""
        guard = Guarded(command, self.flwr_home / "guards" / f"{name}.json", env=self.env(), **popen)
        self.guards.append(guard)
        return guard

    def run(self, run_config_file: Path, *, timeout: float, on_line: Callable[[str], None]) -> int:
        """``flwr run <app> local ... --stream``; each output line goes to ``on_line``.

        Returns the CLI's exit code (124 after ``timeout``). The run's own outcome is in its
        run directory (the ServerApp writes metrics.json only when it completes).
        """
        command = ["flwr", "run", str(self.app_dir), "local", "--federation-config", self.settings.federation_config(),
                   "--run-config", str(run_config_file), "--stream"]
        process = self._guarded(command, f"flwr-run-{len(self.guards)}", stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=self.app_dir)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            process.request_stop()  # the guard stops the CLI; the run itself stops with the SuperLink

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert process.stdout is not None
            for line in _lines(process.stdout):
                on_line(line)
            code = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:  # interrupted while streaming
                process.stop()
        return 124 if timed_out.is_set() else code

    def stop(self) -> None:
        """Stop every guarded tree (SuperLink, simulation, Ray; ``flwr run``) and write ``processes.json``."""
        left = stop_guards(self.guards, self.work_dir / "processes.json")
        count = sum(len(guard.processes()) for guard in self.guards)
        if left:
            self.log(f"[ecs-simulate] WARNING: processes still running after stop: {left}")
        else:
            self.log(f"[ecs-simulate] stopped {count} processes (SuperLink, simulation, Ray)")


def stop_guards(guards: list[Guarded], record: Path) -> list[int]:
    """Stop every guarded tree (all at once), list their processes in ``record``; return the PIDs left running."""
    for guard in guards:
        guard.request_stop()  # every guard starts stopping its tree now, in parallel
    left = [pid for guard in guards for pid in guard.stop()["left_running"]]
    processes = [process for guard in guards for process in guard.processes()]
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"processes": processes, "left_running": left}, indent=1) + "\n")
    return left


def _lines(stream) -> Iterator[str]:  # noqa: ANN001
    for line in iter(stream.readline, ""):
        yield line.rstrip("\n")
