"""The Deployment Runtime on loopback: a real SuperLink with TLS and SuperNode authentication.

``scripts/make-certificates.sh`` makes the CA, the SuperLink's certificate and one key pair per
hospital. The coordinator's SuperLink runs with ``--ssl-*`` and ``--enable-supernode-auth``;
three hospitals' public keys are registered with ``flwr supernode register``; three SuperNodes
(two training centers and one held-out center of the tiny cohort, each with its own center
folder as ``data-dir``) connect with the CA as ``--root-certificates`` and their private keys,
and stay online. A fourth SuperNode with an unregistered key is refused. Every process started
here (and every descendant) is recorded by PID and stopped in the teardown
(:class:`simulations.federated.loopback.LoopbackFederation`, shared with the federation benchmark).

A two-round ``flwr run`` of the smoke experiment over this federation passed twice (372 s and
477 s on 2 cores) but failed once under load with HTTP 500 from the SuperLink's
``send-task-heartbeat``; it is kept out of CI until that is understood (commit 473b8a2 has it).
The federation benchmark hit the same HTTP 500s and its SuperLink log names the cause:
``sqlite3.OperationalError: database is locked`` in the SuperLink's SQLite state (``--database``
file) under concurrent SuperNode and ServerApp requests; with the in-memory state
(``start_superlink(database=False)``) its 5-site smoke run completed (docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.federated.loopback import LoopbackFederation
from simulations.federated.runtime import process_alive

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTIFICATES = REPO / "scripts" / "make-certificates.sh"
TRAINING_CENTERS = ("regional", "university")
HELD_OUT_CENTER = "teaching"
HOSPITALS = (*TRAINING_CENTERS, HELD_OUT_CENTER)
INTRUDER = "intruder"
CONNECTION = "trial"


def _start_hospital(federation: LoopbackFederation, name: str, data_dir: Path) -> subprocess.Popen:
    node_config = {"data-dir": data_dir, "center": name, "cache-dir": federation.work_dir / "cache" / name}
    assert federation.certificates is not None
    return federation.start_supernode(name, node_config, auth_key=federation.certificates / "nodes" / name)


@pytest.fixture(scope="module")
def federation(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackFederation]:
    """SuperLink (TLS, node authentication) + registered hospitals' SuperNodes, stopped by PID after."""
    work_dir = tmp_path_factory.mktemp("deployment")
    certificates = work_dir / "certificates"
    made = subprocess.run(["bash", str(MAKE_CERTIFICATES), "--out", str(certificates),
                           *[arg for name in (*HOSPITALS, INTRUDER) for arg in ("--node", name)]],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    fed = LoopbackFederation.create(work_dir, certificates=certificates, connection=CONNECTION,
                                    extra_env={"ECS_HOME": str(work_dir)})
    try:
        fed.start_superlink(node_auth=True)
        for name in HOSPITALS:
            registered = fed.flwr("supernode", "register", str(certificates / "nodes" / f"{name}.pub"), CONNECTION,
                                  "--name", name, cwd=REPO)
            assert registered.returncode == 0 and "registered successfully" in registered.stdout, registered.stdout
        for name in HOSPITALS:
            _start_hospital(fed, name, tiny_cohort / name)
        fed.wait_online(len(HOSPITALS), timeout=90)
        yield fed
    finally:
        left = fed.stop(grace_s=15)
        assert left == [], f"processes still running after the teardown: {left}"


def test_unregistered_supernode_is_refused(federation: LoopbackFederation) -> None:
    intruder = _start_hospital(federation, INTRUDER, federation.work_dir / "no-data")
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
