"""A Flower federation on loopback on the Deployment Runtime, every process started and stopped by PID.

One ``flower-superlink`` (TLS + SuperNode authentication when given a certificate folder made
by ``scripts/make-certificates.sh``, else ``--insecure``) and one ``flower-supernode`` per site,
each with its own ``FLWR_HOME``; the coordinator's ``FLWR_HOME`` holds one connection for the
``flwr`` CLI. Each runs under a guard (:mod:`simulations.federated.guard`) in a session of its
own, which records every descendant (superexec, ServerApp and ClientApp processes) and stops
them all, SIGTERM then SIGKILL, on :meth:`LoopbackFederation.stop` or as soon as the process
that started them ends, however it ends (a killed test run leaves nothing behind).
:meth:`LoopbackFederation.stop` writes ``processes.json``. Runtime dependency installation and
the update check are disabled.

Used by ``tests/server/test_deployment_tls.py`` (TLS, node authentication, two rounds of the
smoke experiment, an unregistered key refused) and ``benchmarks/bench_federated.py`` (the same experiment deployed vs simulated).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from simulations.federated.guard import Guarded
from simulations.federated.runtime import free_port, stop_guards

__all__ = ["BIN", "LoopbackFederation", "superlink_healthy", "node_config_string"]

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr of this environment


def superlink_healthy(port: int, ca_file: Path | None = None) -> bool:
    """GET /health on the SuperLink (https with ``ca_file``, else http)."""
    if ca_file is not None:
        url, context = f"https://127.0.0.1:{port}/health", ssl.create_default_context(cafile=str(ca_file))
    else:
        url, context = f"http://127.0.0.1:{port}/health", None
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def node_config_string(values: Mapping[str, object]) -> str:
    """``--node-config`` value: ``key='value' ...``."""
    return " ".join(f"{key}='{value}'" for key, value in values.items())


@dataclass
class LoopbackFederation:
    """What was started and where everything lives (see the module docstring)."""

    work_dir: Path
    port: int
    env: dict[str, str]
    certificates: Path | None = None  # None: insecure
    connection: str = "trial"
    grace_s: float = 15.0  # SIGTERM -> SIGKILL, for every process started here
    children: list[Guarded] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, work_dir: Path, *, certificates: Path | None = None, connection: str = "trial",
               extra_env: Mapping[str, str] | None = None) -> LoopbackFederation:
        """A coordinator ``FLWR_HOME`` with one connection to a SuperLink on a free port (nothing started yet)."""
        work_dir = Path(work_dir)
        port = free_port()
        home = work_dir / "coordinator"
        home.mkdir(parents=True, exist_ok=True)
        security = f'root-certificates = "{certificates / "ca.crt"}"\n' if certificates else "insecure = true\n"
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{connection}"\n\n[superlink.{connection}]\naddress = "127.0.0.1:{port}"\n{security}')
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home),
               "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
               "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        return cls(work_dir, port, env, certificates, connection)

    # processes -------------------------------------------------------------------------------
    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Guarded:
        """Start ``command`` under a guard, output to ``<work_dir>/<name>.log``, its processes recorded
        in ``<work_dir>/guards/<name>.json``."""
        log = self.work_dir / f"{name}.log"
        self.logs[name] = log
        with log.open("w") as sink:
            process = Guarded(command, self.work_dir / "guards" / f"{name}.json", env=env or self.env, cwd=self.work_dir,
                              stdout=sink, stderr=subprocess.STDOUT, grace_s=self.grace_s)
        self.children.append(process)
        return process

    def processes(self) -> list[dict]:
        """Every process started here so far (guards, commands, their descendants): pid, start, sid, cmd."""
        return [process for child in self.children for process in child.processes()]

    def stop(self) -> list[int]:
        """Stop every tree (SIGTERM, then SIGKILL); write processes.json; return PIDs left running."""
        return stop_guards(self.children, self.work_dir / "processes.json")

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the coordinator ---------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """The ``flwr`` CLI of the coordinator (its FLWR_HOME holds the connection)."""
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)

    def node_list(self) -> list[dict]:
        """``flwr supernode list <connection> --format json``: the SuperLink's nodes."""
        listed = self.flwr("supernode", "list", self.connection, "--format", "json")
        if listed.returncode != 0:
            raise RuntimeError(f"flwr supernode list failed: {listed.stdout}{listed.stderr}")
        return json.loads(listed.stdout[listed.stdout.index("{"):])["nodes"]

    def healthy(self) -> bool:
        return superlink_healthy(self.port, self.certificates / "ca.crt" if self.certificates else None)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition``; on timeout raise with the tail of every log."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                logs = {name: path.read_text()[-2000:] for name, path in self.logs.items()}
                raise TimeoutError(f"{what} not within {timeout:.0f}s; logs: {json.dumps(logs, indent=1)}")
            time.sleep(0.5)

    def start_superlink(self, *, node_auth: bool = False, database: bool = False, timeout: float = 60) -> Guarded:
        """``flower-superlink`` (TLS when the federation has certificates) and wait for /health.

        ``database``: SQLite state in ``<work_dir>/superlink.db`` (survives a SuperLink restart);
        by default Flower's in-memory state, as the runbook recommends. With the file, Flower 1.42
        registers each message's object tree (1,066 objects for a smoke stage reply) in one write
        transaction, 2-3 s of CPU here, and a concurrent request waits at most 5 s for the lock:
        measured with ``benchmarks/bench_superlink_state.py``, 2 to 6 replies at once lost 1 of 2
        to 3 of 6 with ``sqlite3.OperationalError: database is locked`` (HTTP 500, the run lost).
        """
        command = [str(BIN / "flower-superlink")]
        if self.certificates is not None:
            command += ["--ssl-ca-certfile", str(self.certificates / "ca.crt"),
                        "--ssl-certfile", str(self.certificates / "server.crt"),
                        "--ssl-keyfile", str(self.certificates / "server.key")]
        else:
            command.append("--insecure")
        if node_auth:
            command.append("--enable-supernode-auth")
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--disable-runtime-dependency-installation"]
        if database:
            command += ["--database", str(self.work_dir / "superlink.db")]
        superlink = self.start("superlink", command)
        self.wait_for(lambda: superlink.poll() is None and self.healthy(), timeout, "SuperLink /health")
        return superlink

    # hospitals ---------------------------------------------------------------------------------
    def supernode_command(self, node_config: Mapping[str, object], *, auth_key: Path | None = None) -> list[str]:
        command = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}"]
        if self.certificates is not None:
            command += ["--root-certificates", str(self.certificates / "ca.crt")]
        else:
            command.append("--insecure")
        if auth_key is not None:
            command += ["--auth-supernode-private-key", str(auth_key)]
        return command + ["--port", str(free_port()), "--max-retries", "3", "--max-wait-time", "30",
                          "--node-config", node_config_string(node_config)]

    def hospital_env(self, name: str) -> dict[str, str]:
        """The environment of one hospital's SuperNode: its own FLWR_HOME."""
        home = self.work_dir / "hospitals" / name
        home.mkdir(parents=True, exist_ok=True)
        return {**self.env, "FLWR_HOME": str(home)}

    def start_supernode(self, name: str, node_config: Mapping[str, object], *, auth_key: Path | None = None) -> Guarded:
        return self.start(f"supernode-{name}", self.supernode_command(node_config, auth_key=auth_key), self.hospital_env(name))

    def wait_online(self, count: int, timeout: float = 90) -> None:
        self.wait_for(lambda: sum(node["status"] == "online" for node in self.node_list()) == count, timeout,
                      f"{count} SuperNodes online")
