"""``ecs-simulate``: a whole federated experiment on Flower's local Simulation Runtime
(:mod:`simulations.federated.simulate`: cohort, run config, SuperLink + ``flwr run``, progress,
every process stopped, summary table).

``experiment=compare`` (a config with a ``compare`` node) instead runs many such runs and
centralized baselines and writes one table: :mod:`simulations.federated.compare`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from simulations.cli_errors import user_errors
from simulations.federated.simulate import simulate
from simulations.report.build import report_after_run


def _log(message: str) -> None:
    print(message, flush=True)


@hydra.main(version_base="1.3", config_path="pkg://configs.federated", config_name="simulate")
def _main(cfg: DictConfig) -> None:
    with user_errors("ecs-simulate", RuntimeError, interrupted="interrupted; every process it started was stopped"):
        if cfg.get("compare") is not None:  # experiment=compare: many runs, one table
            from simulations.federated.compare import run_compare

            code = run_compare(cfg, list(HydraConfig.get().overrides.task), _log)
        else:
            code = simulate(cfg, list(HydraConfig.get().overrides.task))
        run_dir = Path(str(cfg.run_dir)).resolve()
        if cfg.report and ((run_dir / "metrics.json").is_file() or (run_dir / "results.json").is_file()):
            report_after_run(run_dir, _log)  # report.html; a failing report is logged, the exit code stays
    if code:
        sys.exit(code)


def main() -> None:
    """Console entry point (``ecs-simulate``)."""
    _main()


if __name__ == "__main__":
    main()
