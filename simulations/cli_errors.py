"""How the research CLIs (``ecs-cohort``, ``ecs-train``, ``ecs-simulate``, the shortcut audit)
fail: a problem the user can fix (a bad config value, a missing file, a cohort folder holding
another cohort, a run that stopped) prints ``<prog>: <message>`` on stderr and exits 1; Ctrl-C
or SIGTERM exits 130 after saying so. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

__all__ = ["USER_ERRORS", "EXIT_INTERRUPTED", "user_errors"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, TimeoutError,
                                                HydraException, OmegaConfBaseException)  # FileExistsError: a cohort folder holding another cohort
EXIT_INTERRUPTED = 130


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def user_errors(prog: str, *also: type[BaseException], interrupted: str = "interrupted") -> Iterator[None]:
    """Run the body of ``prog``; user errors (``USER_ERRORS`` and ``also``) and interrupts end
    the process as described in the module docstring. SIGTERM is treated as Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except KeyboardInterrupt:
        print(f"[{prog}] {interrupted}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except (*USER_ERRORS, *also) as exc:
        sys.exit(f"{prog}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
