"""The Deployment Runtime on loopback: a real SuperLink with TLS and SuperNode authentication.

``scripts/make-certificates.sh`` makes the CA, the SuperLink's certificate and one key pair per
hospital. The coordinator's SuperLink runs with ``--ssl-*`` and ``--enable-supernode-auth``;
three hospitals' public keys are registered with ``flwr supernode register``; three SuperNodes
(two training centers and one held-out center of the tiny cohort, each with its own center
folder as ``data-dir``) connect with the CA as ``--root-certificates`` and their private keys.
``flwr run`` then runs one round of the smoke experiment over them (stage B, no GAN phase: the
information query, the round's training and evaluation, and the final evaluation that sends the
aggregated model back to every hospital, the held-out one included), and a fourth SuperNode with an
unregistered key is refused. One round: every message of Flower 1.42's deployment starts a fresh
``flwr-clientapp`` process (torch imported each time) and the SuperLink's HTTP API is polled
several times a second meanwhile, so each round costs minutes of the CI's two cores; the rounds'
logic is the simulation tests' subject. Every
process started here (and every descendant) runs under a guard that records it and stops it in
the teardown, or when this test process ends in any other way
(:class:`simulations.federated.loopback.LoopbackFederation`, shared with the federation benchmark).
The tests pass in any order: each asserts only what the module's fixtures did, not what another
test did before it.

The SuperLink runs as the runbook starts it, with Flower's in-memory state: with its SQLite
``--database`` file, replies that arrive together fail with ``sqlite3.OperationalError: database
is locked`` (HTTP 500, the run lost; measured by ``benchmarks/bench_superlink_state.py``).
Hospitals' processes run with one torch thread each, as a simulated site does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.federated.guard import Guarded, process_alive
from simulations.federated.loopback import LoopbackFederation
from simulations.federated.simulate import write_run_config

pytestmark = pytest.mark.slow(longest=True)  # among the longest runs: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTIFICATES = REPO / "scripts" / "make-certificates.sh"
TRAINING_CENTERS = ("regional", "university")
HELD_OUT_CENTER = "teaching"
HOSPITALS = (*TRAINING_CENTERS, HELD_OUT_CENTER)
INTRUDER = "intruder"
CONNECTION = "trial"
OVERRIDES = (f"held_out_centers=[{HELD_OUT_CENTER}] expected_sites={len(HOSPITALS)} "
             "synthesis=false rounds.gan=0 rounds.stage_a=0 rounds.stage_b=1 participation.round_timeout_s=240")


def _start_hospital(federation: LoopbackFederation, name: str, data_dir: Path) -> Guarded:
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
                                    extra_env={"ECS_HOME": str(work_dir), "OMP_NUM_THREADS": "1"})
    try:
        fed.start_superlink(node_auth=True)  # in-memory state, as in the runbook
        for name in HOSPITALS:
            registered = fed.flwr("supernode", "register", str(certificates / "nodes" / f"{name}.pub"), CONNECTION,
                                  "--name", name, cwd=REPO)
            assert registered.returncode == 0 and "registered successfully" in registered.stdout, registered.stdout
        for name in HOSPITALS:
            _start_hospital(fed, name, tiny_cohort / name)
        fed.wait_online(len(HOSPITALS), timeout=90)
        yield fed
    finally:
        left = fed.stop()
        assert left == [], f"processes still running after the teardown: {left}"


@pytest.fixture(scope="module")
def deployed_run(federation: LoopbackFederation) -> Path:
    """``flwr run . trial --stream`` of the smoke experiment, one round; returns the run folder."""
    run_dir = federation.work_dir / "run"
    run_config = write_run_config(federation.work_dir / "run_config.toml",
                                  {"experiment": "smoke", "overrides": OVERRIDES, "run-dir": str(run_dir)})
    result = federation.flwr("run", str(REPO), CONNECTION, "--run-config", str(run_config), "--stream",
                             timeout=540, cwd=REPO)
    (federation.work_dir / "flwr-run.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert (run_dir / "metrics.json").is_file(), (result.stdout + result.stderr)[-6000:]
    return run_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_round_over_tls_with_node_authentication(deployed_run: Path) -> None:
    rounds = _jsonl(deployed_run / "rounds.jsonl")
    assert [r["phase"] for r in rounds] == ["stage_b"]
    for r in rounds:
        assert r["aggregated"], r
        assert sorted(r["answered"]) == sorted(TRAINING_CENTERS), r
        touched = set(r["sampled"]) | set(r["answered"]) | set(r["train"]) | set(r["val"]) | set(r["failed"])
        assert HELD_OUT_CENTER not in touched, r
    final = {line["center"]: line for line in _jsonl(deployed_run / "final_evaluation.jsonl")}
    assert final[HELD_OUT_CENTER]["role"] == "held_out" and final[HELD_OUT_CENTER]["n"] > 0
    assert {c for c, line in final.items() if line["role"] == "train"} == set(TRAINING_CENTERS)
    metrics = json.loads((deployed_run / "metrics.json").read_text())
    assert metrics["held_out"]["n"] == final[HELD_OUT_CENTER]["n"]
    assert (deployed_run / "model" / "lsnet.onnx").is_file()


def test_unregistered_supernode_is_refused(federation: LoopbackFederation) -> None:
    intruder = _start_hospital(federation, INTRUDER, federation.work_dir / "no-data")
    code = intruder.wait(timeout=90)
    log = federation.logs[f"supernode-{INTRUDER}"].read_text()
    assert code != 0, log
    assert "Failed to activate SuperNode" in log, log
    nodes = federation.node_list()
    assert len(nodes) == len(HOSPITALS)  # only the registered keys are known to the SuperLink
    assert all(node["status"] == "online" for node in nodes), nodes


def _program(cmd: str) -> str:
    """The program a recorded command line runs (``python .../bin/flower-superlink ...`` -> flower-superlink).

    '' for an empty one: the guard records a process that was already gone (or a zombie) when it
    read ``/proc/<pid>/cmdline`` with no command line (seen under load).
    """
    words = cmd.split()
    if not words:
        return ""
    return Path(words[1] if len(words) > 1 and Path(words[0]).name.startswith("python") else words[0]).name


def test_every_started_process_is_recorded_by_its_guard(federation: LoopbackFederation) -> None:
    started = [name for name in federation.logs]  # superlink, supernode-<name> (+ the intruder, if its test ran)
    processes = [p for p in federation.processes() if not p["cmd"].startswith("guard: ")]
    programs = [_program(p["cmd"]) for p in processes]
    assert programs.count("flower-superlink") == 1
    assert programs.count("flower-supernode") == sum(name.startswith("supernode-") for name in started)
    # each running SuperLink's and SuperNode's superexec (started a moment after it comes online) is
    # in the record of that process's guard; the SuperLink's runs in a session of its own
    running = [child for child in federation.children if child.poll() is None]

    def superexecs(child: Guarded) -> list[dict]:
        return [p for p in child.record()["processes"] if _program(p["cmd"]) == "flower-superexec"]

    federation.wait_for(lambda: all(superexecs(child) for child in running), 60, "a superexec under every guard")
    superlink = federation.children[0]
    assert [p["sid"] == p["pid"] for p in superexecs(superlink)] == [True], superexecs(superlink)
    for child in running:
        commands = {p["pid"]: p for p in child.record()["processes"]}
        command = commands[child.record()["pid"]]
        assert process_alive(command["pid"], command["start"]), command
