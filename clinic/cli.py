"""How the clinic commands fail: a problem the user can fix (a missing file, an unusable bundle, a
bad label file) prints ``<prog>: <message>`` on stderr and exits 1; Ctrl-C exits 130. Bad images
never get here: they are reported per file. (The research CLIs' ``simulations.cli_errors`` does
the same but needs Hydra, which the clinic install does not have.)"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from client.data.labels import LabelFileError
from ecs_models.bundle_format import BundleError

__all__ = ["EXIT_INTERRUPTED", "json_safe", "progress_printer", "user_errors"]

EXIT_INTERRUPTED = 130


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Run a command's body; user errors and Ctrl-C end the process as the module says."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"[{prog}] interrupted", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (BundleError, LabelFileError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        sys.exit(f"{prog}: {exc}")


def progress_printer(prog: str, quiet: bool = False) -> Callable[[int, int, str], None] | None:
    """``progress(done, total, name)`` printing ``[prog] done/total name`` on stderr."""
    if quiet:
        return None

    def progress(done: int, total: int, name: str) -> None:
        print(f"[{prog}] {done}/{total} {name}", file=sys.stderr, flush=True)

    return progress


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
