"""The research CLIs fail one way: a user error prints ``<prog>: <message>`` and exits 1, an
interrupt exits 130, a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simulations.cli_errors import EXIT_INTERRUPTED, user_errors
from simulations.cohort.generate import CohortExistsError


@pytest.mark.parametrize("error", [ValueError("bad value"), FileNotFoundError("no such folder"),
                                   CohortExistsError("/x holds a different cohort")])
def test_a_user_error_exits_1_with_the_programs_name(error: Exception) -> None:
    with pytest.raises(SystemExit) as stop, user_errors("ecs-train"):
        raise error
    assert stop.value.code == f"ecs-train: {error}"  # sys.exit(str): printed on stderr, exit status 1


def test_an_interrupt_exits_130_and_a_bug_keeps_its_traceback(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop, user_errors("ecs-simulate", interrupted="interrupted; all stopped"):
        raise KeyboardInterrupt
    assert stop.value.code == EXIT_INTERRUPTED and "[ecs-simulate] interrupted; all stopped" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError), user_errors("ecs-train"):
        _ = 1 / 0


def test_ecs_train_with_an_unknown_mode_says_so_and_exits_1(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "simulations.centralized.cli", "mode=sideways", "cohort=tiny",
                             f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "ecs-train: " in result.stderr and "sideways" in result.stderr, result.stderr[-800:]
