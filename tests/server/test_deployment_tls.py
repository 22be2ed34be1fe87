"""The Deployment Runtime on loopback: a real SuperLink with TLS and SuperNode authentication.

``scripts/make-certificates.sh`` makes the CA, the SuperLink's certificate and one key pair per
hospital. The coordinator's SuperLink runs with ``--ssl-*`` and ``--enable-supernode-auth``;
three hospitals' public keys are registered with ``flwr supernode register``; three SuperNodes
(two training centers and one held-out center of the tiny cohort, each with its own center
folder as ``data-dir``) connect with the CA as ``--root-certificates`` and their private keys,
and stay online. A fourth SuperNode with an unregistered key is refused. Every process started
here (and every descendant) is recorded by PID and stopped in the teardown.

A two-round ``flwr run`` of the smoke experiment over this federation passed twice (372 s and
477 s on 2 cores) but failed once under load with HTTP 500 from the SuperLink's
``send-task-heartbeat``; it is kept out of CI until that is understood (commit 473b8a2 has it).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from simulations.federated.runtime import free_port, process_alive, stop_tracked, track_tree

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MAKE_CERTIFICATES = REPO / "scripts" / "make-certificates.sh"
TRAINING_CENTERS = ("regional", "university")
HELD_OUT_CENTER = "teaching"
HOSPITALS = (*TRAINING_CENTERS, HELD_OUT_CENTER)
INTRUDER = "intruder"
CONNECTION = "trial"


@dataclass
class LoopbackFederation:
    """What the fixture started and where everything lives."""

    work_dir: Path
    certificates: Path
    port: int
    env: dict[str, str]
    children: list[subprocess.Popen] = field(default_factory=list)
    tracked: dict[int, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``command`` in its own session, output to ``<work_dir>/<name>.log``, and record it."""
        log = self.work_dir / f"{name}.log"
        self.logs[name] = log
        with log.open("w") as sink:
            process = subprocess.Popen(command, env=env or self.env, stdout=sink, stderr=subprocess.STDOUT,
                                       cwd=self.work_dir, start_new_session=True)
        with self.lock:
            self.children.append(process)
            track_tree(process.pid, self.tracked)
        return process

    def track_descendants(self) -> None:
        """Record every live descendant (ServerApp, ClientApp processes) of what we started."""
        with self.lock:
            for child in self.children:
                if child.poll() is None:
                    track_tree(child.pid, self.tracked)

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """The ``flwr`` CLI of the coordinator (its FLWR_HOME holds the ``trial`` connection)."""
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def node_list(self) -> list[dict]:
        """``flwr supernode list trial --format json``: the SuperLink's nodes."""
        listed = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        return json.loads(listed.stdout[listed.stdout.index("{"):])["nodes"]


def _superlink_healthy(port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=1.0, context=context) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def _supernode_command(federation: LoopbackFederation, name: str, data_dir: Path) -> list[str]:
    node_config = f"data-dir='{data_dir}' center='{name}' cache-dir='{federation.work_dir / 'cache' / name}'"
    return [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{federation.port}",
            "--root-certificates", str(federation.certificates / "ca.crt"),
            "--auth-supernode-private-key", str(federation.certificates / "nodes" / name),
            "--port", str(free_port()), "--max-retries", "3", "--max-wait-time", "30",
            "--node-config", node_config]


def _hospital_env(federation: LoopbackFederation, name: str) -> dict[str, str]:
    home = federation.work_dir / "hospitals" / name
    home.mkdir(parents=True, exist_ok=True)
    return {**federation.env, "FLWR_HOME": str(home)}


def _wait_for(condition, timeout: float, what: str, federation: LoopbackFederation) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = {name: path.read_text()[-2000:] for name, path in federation.logs.items()}
            raise TimeoutError(f"{what} not within {timeout:.0f}s; logs: {json.dumps(logs, indent=1)}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def federation(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackFederation]:
    """SuperLink (TLS, node authentication) + registered hospitals' SuperNodes, stopped by PID after."""
    work_dir = tmp_path_factory.mktemp("deployment")
    certificates = work_dir / "certificates"
    made = subprocess.run(["bash", str(MAKE_CERTIFICATES), "--out", str(certificates),
                           *[arg for name in (*HOSPITALS, INTRUDER) for arg in ("--node", name)]],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    port = free_port()
    coordinator_home = work_dir / "coordinator"
    coordinator_home.mkdir()
    (coordinator_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{certificates / "ca.crt"}"\n')
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(coordinator_home),
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "HF_HUB_OFFLINE": "1", "ECS_HOME": str(work_dir), "PYTHONUNBUFFERED": "1"}
    fed = LoopbackFederation(work_dir, certificates, port, env)
    stop_watching = threading.Event()

    def watch() -> None:
        while not stop_watching.wait(0.3):
            fed.track_descendants()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        superlink = fed.start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(certificates / "ca.crt"),
            "--ssl-certfile", str(certificates / "server.crt"), "--ssl-keyfile", str(certificates / "server.key"),
            "--enable-supernode-auth", "--host", "127.0.0.1", "--port", str(port),
            "--database", str(work_dir / "superlink.db"), "--disable-runtime-dependency-installation"])
        _wait_for(lambda: superlink.poll() is None and _superlink_healthy(port, certificates / "ca.crt"), 60,
                  "SuperLink /health over TLS", fed)
        for name in HOSPITALS:
            registered = fed.flwr("supernode", "register", str(certificates / "nodes" / f"{name}.pub"), CONNECTION,
                                  "--name", name)
            assert registered.returncode == 0 and "registered successfully" in registered.stdout, registered.stdout
        for name in HOSPITALS:
            fed.start(f"supernode-{name}", _supernode_command(fed, name, tiny_cohort / name), _hospital_env(fed, name))
        _wait_for(lambda: sum(node["status"] == "online" for node in fed.node_list()) == len(HOSPITALS), 90,
                  "three registered SuperNodes online", fed)
        yield fed
    finally:
        stop_watching.set()
        watcher.join(timeout=5)
        fed.track_descendants()
        with fed.lock:
            tracked = dict(fed.tracked)
        left = stop_tracked(tracked, fed.children, grace_s=15)
        (work_dir / "processes.json").write_text(json.dumps(
            {"processes": [{"pid": pid, **info} for pid, info in sorted(tracked.items())], "left_running": left},
            indent=1) + "\n")
        assert left == [], f"processes still running after the teardown: {left}"


def test_unregistered_supernode_is_refused(federation: LoopbackFederation) -> None:
    intruder = federation.start(f"supernode-{INTRUDER}",
                                _supernode_command(federation, INTRUDER, federation.work_dir / "no-data"),
                                _hospital_env(federation, INTRUDER))
    code = intruder.wait(timeout=90)
    log = federation.logs[f"supernode-{INTRUDER}"].read_text()
    assert code != 0, log
    assert "Failed to activate SuperNode" in log, log
    nodes = federation.node_list()
    assert len(nodes) == len(HOSPITALS)  # only the registered keys are known to the SuperLink
    assert all(node["status"] == "online" for node in nodes), nodes


def test_every_started_process_is_tracked_by_pid(federation: LoopbackFederation) -> None:
    federation.track_descendants()
    commands = [info["cmd"] for info in federation.tracked.values()]
    assert sum("flower-superlink" in cmd for cmd in commands) == 1
    assert sum("flower-supernode" in cmd for cmd in commands) == len(HOSPITALS) + 1
    assert all(process_alive(child.pid, federation.tracked[child.pid]["start"])
               for child in federation.children if child.returncode is None)
