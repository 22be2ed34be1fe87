"""The guard (simulations/federated/guard.py) on small process trees of ``sleep``: seconds, no Flower.

Each tree does what Flower's and Ray's processes do: one process leaves the session
(``setsid``, as ``flower-superexec`` does), one is orphaned by a double fork (re-parented, as a
Ray worker whose raylet died). Every process of a tree carries a unique marker variable in its
environment, so the tests find them from /proc without trusting the guard's own record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from leftovers import kill_all_with_env, processes_with_env, wait_until_gone

from simulations.federated.guard import Guarded, proc_stat, process_alive

MARKER = "ECS_GUARD_TEST"
# the command, a grandchild in a session of its own, an orphan (its parent exits at once)
TREE = "setsid sleep 301 & (sleep 302 &) ; sleep 303"


@pytest.fixture
def marker() -> str:
    """A value of MARKER unique to the test; whatever still carries it afterwards is killed."""
    value = uuid.uuid4().hex
    yield value
    kill_all_with_env(MARKER, value)


def _wait_for(condition, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _sleeps(marker: str) -> dict[int, str]:
    return {pid: cmd for pid, cmd in processes_with_env(MARKER, marker).items() if cmd.startswith("sleep ")}


def test_stop_ends_processes_that_left_the_session_or_were_orphaned(tmp_path: Path, marker: str) -> None:
    guard = Guarded(["bash", "-c", TREE], tmp_path / "record.json", env={**os.environ, MARKER: marker}, grace_s=5)
    _wait_for(lambda: len(_sleeps(marker)) == 3)
    sleeps = {cmd: pid for pid, cmd in _sleeps(marker).items()}
    assert proc_stat(sleeps["sleep 301"]).sid == sleeps["sleep 301"]  # its own session, outside the guard's
    assert proc_stat(sleeps["sleep 302"]).ppid == guard.pid  # orphaned: re-parented to the guard, not init
    _wait_for(lambda: set(sleeps.values()) <= {p["pid"] for p in guard.processes()})  # the record lags <= 0.5 s

    record = guard.stop()
    assert record["left_running"] == [] and record["killed"] == []  # SIGTERM was enough
    assert processes_with_env(MARKER, marker) == {}
    assert set(sleeps.values()) <= {p["pid"] for p in record["processes"]}
    assert record["reason"] == "starter gone (end of input)"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda how: how.name)
def test_nothing_outlives_a_starter_killed_from_outside(tmp_path: Path, marker: str, how: signal.Signals) -> None:
    """The starter dies by SIGKILL (a subprocess.run or pytest timeout), SIGTERM or Ctrl-C; it never calls stop()."""
    record = tmp_path / "record.json"
    starter = subprocess.Popen(
        # SIGINT as at a terminal: a starter launched from a background job inherits it ignored
        [sys.executable, "-c", "import signal, sys, time\nfrom simulations.federated.guard import Guarded\n"
         "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
         f"Guarded(['bash', '-c', {TREE!r}], {str(record)!r}, grace_s=5)\nprint('started', flush=True)\ntime.sleep(300)"],
        env={**os.environ, MARKER: marker}, stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None and starter.stdout.readline() == "started\n"
    _wait_for(lambda: len(_sleeps(marker)) == 3)

    starter.send_signal(how)
    assert starter.wait(timeout=10) != 0
    left = wait_until_gone(MARKER, marker, timeout=15)
    assert left == {}, left
    outcome = json.loads(record.read_text())
    assert outcome["reason"] == "starter gone (end of input)" and outcome["left_running"] == []
    assert len([p for p in outcome["processes"] if p["cmd"].startswith("sleep ")]) == 3


def test_the_guard_exits_with_the_commands_code_and_stops_what_it_left(tmp_path: Path, marker: str) -> None:
    env = {**os.environ, MARKER: marker}
    assert Guarded(["bash", "-c", "exit 3"], tmp_path / "a.json", env=env).wait(timeout=20) == 3
    assert Guarded(["bash", "-c", "kill -TERM $$"], tmp_path / "b.json", env=env).wait(timeout=20) == 128 + signal.SIGTERM
    # the command exits and leaves a background process: the guard stops it before it exits itself
    guard = Guarded(["bash", "-c", "sleep 304 & sleep 0.5"], tmp_path / "c.json", env=env, grace_s=5)
    assert guard.wait(timeout=20) == 0
    assert processes_with_env(MARKER, marker) == {}
    recorded = guard.record()
    assert recorded["reason"] == "command exited" and recorded["left_running"] == []
    assert any(p["cmd"] == "sleep 304" and not process_alive(p["pid"], p["start"]) for p in recorded["processes"])


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path, marker: str) -> None:
    guard = Guarded(["bash", "-c", "trap '' TERM; sleep 305 & wait"], tmp_path / "record.json",
                    env={**os.environ, MARKER: marker}, grace_s=1)
    _wait_for(lambda: len(_sleeps(marker)) == 1)
    record = guard.stop()
    assert record["left_running"] == [] and processes_with_env(MARKER, marker) == {}
    assert any(p["cmd"].startswith("bash") for p in record["processes"] if p["pid"] in record["killed"])
