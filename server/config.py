"""The ServerApp's configuration: Hydra composition of ``configs/federated/simulate.yaml``.

The Flower run config (``[tool.flwr.app.config]`` in pyproject.toml, overridden with
``flwr run ... --run-config``) names the experiment and carries Hydra overrides:

| run-config key | meaning |
|---|---|
| ``experiment`` | ``configs/federated/experiment/<name>.yaml`` (smoke, quick, compare) |
| ``overrides`` | space-separated Hydra overrides, e.g. ``"strategy=fedprox rounds.stage_a=4"`` |
| ``run-dir`` | where the run persists (default: ``${paths.runs}/federated/<experiment>/<run id>``) |
| ``resume`` | continue the run in ``run-dir`` from its last completed round |
| ``cohort-dir`` / ``cache-dir`` / ``faults`` | simulation only, read by the ClientApp |

The same composition drives ``ecs-simulate``, so a simulated and a deployed run of one
experiment train with identical settings.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from omegaconf import DictConfig

__all__ = ["CONFIG_MODULE", "CONFIG_NAME", "compose_config", "run_config_overrides"]

CONFIG_MODULE = "configs.federated"
CONFIG_NAME = "simulate"


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose ``configs/federated/simulate.yaml`` with Hydra ``overrides`` (outside a Hydra app)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=overrides)


def run_config_overrides(run_config: Mapping[str, object], run_id: int | str | None = None) -> list[str]:
    """Hydra overrides from a Flower run config (see the module docstring)."""
    overrides = [f"experiment={run_config.get('experiment') or 'smoke'}"]
    overrides += shlex.split(str(run_config.get("overrides", "") or ""))
    if run_config.get("run-dir"):
        overrides.append(f"run_dir={run_config['run-dir']}")
    elif run_id is not None:
        overrides.append(f"run_id={run_id}")
    if run_config.get("resume"):
        overrides.append("resume=true")
    return overrides
