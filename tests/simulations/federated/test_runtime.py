"""``ecs-simulate`` (simulations/federated/runtime.py) stopped from outside, and on an existing Ray cluster.

1. SIGTERM while the sites train: within a bounded time no process of the run is left. The run's
   processes are found from /proc by the run-local ``FLWR_HOME`` every one of them inherits
   (SuperLink, superexec, simulation, Ray's GCS, raylet and actors), not from the run's own record.
2. ``federation=ray_cluster`` (the README's way past one machine): a Ray head on loopback with a
   run-local temporary folder, started and stopped under a guard (never ``ray stop``, which stops
   every Ray on the machine); the smoke federation runs against it, its sites are that cluster's
   actors (the head's logs: the simulation process is the cluster's driver, its actors ran in the
   head's workers), and after the run and the head nothing of either is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from leftovers import kill_all_with_env, processes_with_env, wait_until_gone

from simulations.federated.guard import Guarded
from simulations.federated.runtime import free_port

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
# two classifier rounds, no GAN phase: the shortest run that trains and evaluates every site
SHORT = ("synthesis=false", "rounds.gan=0", "rounds.stage_a=1", "rounds.stage_b=1")
HEAD_MARKER = "ECS_RAY_HEAD_TEST"


def _env(home: Path) -> dict[str, str]:
    # one torch thread per process: on 2 shared cores, 2 intra-op threads spin against other jobs
    return {**os.environ, "ECS_HOME": str(home), "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
            "OMP_NUM_THREADS": "1"}


def _command(run_dir: Path, cohort: Path, *overrides: str) -> list[str]:
    return [str(BIN / "ecs-simulate"), "experiment=smoke", f"run_dir={run_dir}", f"cohort_dir={cohort}", "report=false", *overrides]


def _wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, f"exited with {process.returncode} before {text!r}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f}s: {log.read_text()[-3000:]}"
        time.sleep(1)


def _program(cmd: str) -> str:
    """``python .../bin/flwr-simulation --x`` -> flwr-simulation; ``ray::ClientAppActor.run`` stays."""
    words = cmd.split() or [""]
    return Path(words[1] if len(words) > 1 and Path(words[0]).name.startswith("python") else words[0]).name


def test_sigterm_while_training_stops_every_process_of_the_run(tiny_cohort: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    flwr_home = str(run_dir / "flwr_home")  # in the environment of every process of this run
    log = tmp_path / "ecs-simulate.log"
    with log.open("w") as sink:  # the full smoke run: training goes on well past round 1
        process = subprocess.Popen(_command(run_dir, tiny_cohort), cwd=REPO, env=_env(tmp_path), stdout=sink,
                                   stderr=subprocess.STDOUT)
    try:
        _wait_for_line(log, "(round  1)", process, timeout=420)
        during = processes_with_env("FLWR_HOME", flwr_home)
        programs = {_program(cmd) for cmd in during.values()}
        assert {"flower-superlink", "flower-superexec", "flwr-simulation", "gcs_server", "raylet"} <= programs, programs
        assert any(p.startswith("ray::ClientAppActor") for p in programs), programs

        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        code = process.wait(timeout=90)
        left = wait_until_gone("FLWR_HOME", flwr_home, timeout=30)
        took = time.monotonic() - stopped
    finally:
        if process.poll() is None:
            process.kill()
        kill_all_with_env("FLWR_HOME", flwr_home)
    output = log.read_text()
    assert code == 130 and "interrupted; every process it started was stopped" in output, output[-3000:]
    assert left == {}, f"left after SIGTERM: {left}"
    assert took < 60, took
    record = json.loads((run_dir / "processes.json").read_text())
    assert record["left_running"] == []
    assert set(during) <= {p["pid"] for p in record["processes"]}  # the run's own record missed nothing
    assert not (run_dir / "metrics.json").exists()


@dataclass(frozen=True)
class RayHead:
    address: str
    temp_dir: Path
    marker: str
    guard: Guarded


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[RayHead]:
    """``ray start --head --block`` on loopback, 2 CPUs, every port free and the temp folder run-local."""
    # Ray's socket paths (<temp>/session_<time>_<pid>/sockets/...) must fit in 107 bytes: a short folder
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    marker = uuid.uuid4().hex
    port = free_port()
    command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
               "--num-cpus", "2", "--temp-dir", str(temp_dir), "--include-dashboard", "false", "--disable-usage-stats",
               "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
               "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
               "--metrics-export-port", str(free_port())]
    log = tmp_path / "ray-head.log"
    with log.open("w") as sink:
        guard = Guarded(command, tmp_path / "ray-head.json", stdout=sink, stderr=subprocess.STDOUT, grace_s=15,
                        env={**os.environ, HEAD_MARKER: marker, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert guard.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield RayHead(f"127.0.0.1:{port}", temp_dir, marker, guard)
    finally:
        guard.stop()
        kill_all_with_env(HEAD_MARKER, marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _cluster_actors(logs: Path, job_id: str) -> dict[int, str]:
    """``{worker pid: actor class}`` of the job's actors, from the head's worker logs."""
    actors = {}
    for out in logs.glob(f"worker-*-{job_id}-*.out"):
        name = re.search(r"^:actor_name:(\S+)", out.read_text(errors="replace"), re.MULTILINE)
        if name:
            actors[int(out.stem.rsplit("-", 1)[1])] = name.group(1)
    return actors


def test_existing_ray_cluster_runs_the_sites_as_its_actors(tiny_cohort: Path, tmp_path: Path, ray_head: RayHead) -> None:
    run_dir = tmp_path / "run"
    flwr_home = str(run_dir / "flwr_home")
    try:
        result = subprocess.run(
            _command(run_dir, tiny_cohort, *SHORT, "federation=ray_cluster", f"federation.ray_address={ray_head.address}",
                     "federation.client_num_cpus=1"),
            cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=540)
        after_run = processes_with_env("FLWR_HOME", flwr_home)
    finally:
        kill_all_with_env("FLWR_HOME", flwr_home)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (run_dir / "metrics.json").is_file()
    assert after_run == {}, after_run

    # the run's own processes: a SuperLink and the simulation process, no Ray of its own
    record = json.loads((run_dir / "processes.json").read_text())
    assert record["left_running"] == []
    programs = {p["pid"]: _program(p["cmd"]) for p in record["processes"]}
    assert not {"gcs_server", "raylet"} & set(programs.values()), programs
    # (a child it forked, seen before it exec'd or after, carries the same command line: count drivers, not names)
    simulation = [pid for pid, program in programs.items() if program == "flwr-simulation"]
    assert simulation, programs

    # the head's view: one simulation process was one of its drivers, and its actors ran in the head's workers
    logs = ray_head.temp_dir / "session_latest" / "logs"
    drivers = [log for pid in simulation for log in logs.glob(f"python-core-driver-*_{pid}.log")]
    assert len(drivers) == 1, (programs, sorted(p.name for p in logs.iterdir()))
    job_id = drivers[0].name.removeprefix("python-core-driver-")[:8]  # job ids are the first 4 bytes (8 hex)
    actors = _cluster_actors(logs, job_id)
    assert actors and set(actors.values()) == {"ClientAppActor"}, actors
    head_processes = {p["pid"] for p in ray_head.guard.processes()}
    assert set(actors) <= head_processes  # the head's raylet started them ...
    assert not set(actors) & set(programs)  # ... the run did not

    stopped = ray_head.guard.stop()
    assert stopped["left_running"] == []
    assert wait_until_gone(HEAD_MARKER, ray_head.marker, timeout=20) == {}
