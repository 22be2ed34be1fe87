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

``held_out_centers`` has no default the ServerApp accepts: a coordinator states it in
``overrides`` (``held_out_centers=[teaching,rural]``, or ``held_out_centers=[]`` for none), since a
forgotten list would let every connected hospital train. ``ecs-simulate`` always states it
(the cohort's held-out centers unless the command line names others).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONFIG_MODULE", "CONFIG_NAME", "compose_config", "gan_rounds", "held_out_centers", "run_config_overrides"]

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


def gan_rounds(cfg: DictConfig) -> int:
    """The federated SG-CycleGAN rounds the run trains: none without synthesis or with a generator artifact."""
    return int(cfg.rounds.gan) if cfg.synthesis and not cfg.gan_artifact else 0


def held_out_centers(cfg: DictConfig) -> list[str]:
    """The configured held-out center names; a missing (null) list is an error, ``[]`` means none."""
    names = cfg.get("held_out_centers")
    if names is None:
        raise ValueError(
            "held_out_centers is not set: name the centers that must never train, in the run config's overrides, "
            "e.g. --run-config \"... overrides='held_out_centers=[teaching,rural] expected_sites=6'\", "
            "or overrides='held_out_centers=[]' to let every connected site train")
    if not OmegaConf.is_list(names):
        raise ValueError(f"held_out_centers must be a list of center names, e.g. held_out_centers=[{names}], got {names!r}")
    return [str(name) for name in names]
