"""The Flower ServerApp of the coordinator (``serverapp = "server.app:app"``).

Thin: the run config names the experiment and carries Hydra overrides (:mod:`server.config`);
:func:`server.federation.run_federation` runs the phases with Flower's strategies.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.config import compose_config, run_config_overrides
from server.federation import run_federation

app = ServerApp()


def _log(message: str) -> None:
    print(message, flush=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Compose the experiment's configuration and run (or resume) it."""
    cfg = compose_config(run_config_overrides(context.run_config, run_id=grid.run.run_id))
    run_federation(grid, cfg, _log)
