"""One federated experiment on Flower's local Simulation Runtime (what ``ecs-simulate`` runs).

1. Generates the experiment's cohort (or reuses the identical one) with ``ecs-cohort``'s
   generator; one virtual SuperNode per center, held-out centers included (``partition-id`` ->
   center, largest first, :func:`client.cohort.cohort_centers`).
2. Writes the Flower run config (``run_config.toml``: experiment, Hydra overrides, run dir,
   cohort, cache, simulated faults) and starts a private SuperLink + ``flwr run``
   (:class:`simulations.federated.runtime.LocalSimulation`); the ServerApp composes the same
   configuration from it, so the simulated run is the run a coordinator would launch.
3. Streams the run: progress lines (``[ecs] ...``) on the console, everything in
   ``<run_dir>/flower.log``.
4. Stops every process it started (SuperLink, simulation process, Ray), also on error, timeout,
   Ctrl-C or SIGTERM, and even when it is itself killed (each tree runs under a guard,
   :mod:`simulations.federated.guard`); ``processes.json`` lists them.
5. Prints the summary table (``summary.md``) from the run directory; returns non-zero if the run
   did not complete (its ``metrics.json`` is missing).
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from client.cohort import center_roles, cohort_centers
from simulations.centralized.run import ensure_cohort
from simulations.federated.runtime import LocalSimulation, SimulationSettings
from simulations.federated.summary import summary_table

__all__ = ["APP_DIR", "simulate", "write_run_config"]


def _log(message: str) -> None:
    print(message, flush=True)


APP_DIR = Path(__file__).resolve().parents[2]  # the Flower app: the repository with pyproject.toml
_SET_BY_US = ("run_dir", "held_out_centers", "expected_sites", "resume")


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def write_run_config(path: Path, values: dict[str, object]) -> Path:
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {_toml_string(str(value))}")
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate(cfg: DictConfig, cli_overrides: list[str], log=_log, experiment: str | None = None) -> int:  # noqa: ANN001
    """Run the experiment ``cfg``; returns the process exit code.

    ``cli_overrides`` are the Hydra overrides ``cfg`` was composed with (the ServerApp composes
    ``experiment`` + them again); ``experiment`` defaults to the Hydra app's own choice.
    """
    run_dir = Path(str(cfg.run_dir)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cohort_dir = ensure_cohort(cfg, log).resolve()
    centers = cohort_centers(cohort_dir)
    held_out = list(cfg.held_out_centers) if cfg.held_out_centers is not None else center_roles(cohort_dir)[1]
    fed = cfg.federation
    n_nodes = int(fed.num_supernodes or len(centers))
    overrides = [o for o in cli_overrides if o.split("=", 1)[0].lstrip("+~") not in _SET_BY_US and not o.startswith("experiment=")]
    overrides += [f"held_out_centers=[{','.join(held_out)}]", f"expected_sites={n_nodes}"]
    run_config = {
        "experiment": experiment or str(HydraConfig.get().runtime.choices.get("experiment") or "smoke"),
        "overrides": " ".join(overrides),
        "run-dir": str(run_dir),
        "resume": bool(cfg.resume),
        "cohort-dir": str(cohort_dir),
        "cache-dir": str(Path(str(cfg.paths.cache)).resolve()),
        "faults": json.dumps(OmegaConf.to_container(fed.faults, resolve=True) if fed.faults is not None else {}),
    }
    toml = write_run_config(run_dir / "run_config.toml", run_config)
    log(f"[ecs-simulate] {cfg.experiment_name}: {n_nodes} virtual SuperNodes {centers} (held out: {held_out}) -> {run_dir}")
    settings = SimulationSettings(
        num_supernodes=n_nodes, client_num_cpus=int(fed.client_num_cpus), client_num_gpus=float(fed.client_num_gpus),
        ray_num_cpus=fed.ray_num_cpus, ray_address=fed.ray_address, startup_timeout_s=float(fed.superlink_startup_timeout_s))
    with (run_dir / "flower.log").open("a") as flower_log, LocalSimulation(APP_DIR, run_dir, settings, log) as sim:
        def on_line(line: str) -> None:
            flower_log.write(line + "\n")
            flower_log.flush()
            if "[ecs]" in line:
                log(line[line.index("[ecs]"):])
            elif "ERROR" in line or "Traceback" in line:
                log(line)

        code = sim.run(toml, timeout=float(fed.run_timeout_s), on_line=on_line)
    if not (run_dir / "metrics.json").is_file():
        log(f"[ecs-simulate] the run did not complete (flwr exit code {code}); see {run_dir / 'flower.log'}")
        return 1
    table = summary_table(run_dir)
    (run_dir / "summary.md").write_text(table)
    log(table)
    return 0
