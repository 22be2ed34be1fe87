"""``ecs-cohort``: the Hydra entry point that writes a synthetic cohort.

    ecs-cohort cohort=tiny output_dir=/tmp/tiny seed=0
    ecs-cohort cohort=quick workers=2 cohort.centers.clinic.n_us=60
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from simulations.cohort.generate import CohortExistsError, generate_cohort
from simulations.cohort.spec import cohort_spec_from_config


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="generate")
def _main(cfg: DictConfig) -> None:
    try:
        spec = cohort_spec_from_config(OmegaConf.to_container(cfg.cohort, resolve=True))
    except (ValueError, KeyError) as exc:
        sys.exit(f"ecs-cohort: bad cohort config: {exc}")
    try:
        summary = generate_cohort(
            spec, cfg.output_dir, seed=int(cfg.seed), workers=int(cfg.workers), overwrite=bool(cfg.overwrite)
        )
    except CohortExistsError as exc:
        sys.exit(f"ecs-cohort: {exc}")
    width = max(len(c["name"]) for c in summary["centers"])
    print(f"{'center':<{width}}  role      US pts (pos)  US files  MR pts (pos)  paired")
    for c in summary["centers"]:
        print(
            f"{c['name']:<{width}}  {c['role']:<8}  {c['us_patients']:>6} ({c['us_positives']:>3})"
            f"  {c['us_files']:>8}  {c['mr_patients']:>6} ({c['mr_positives']:>3})  {c['paired']:>6}"
        )
    print(f"cohort written to {cfg.output_dir}")


def main() -> None:
    """Console entry point (``ecs-cohort``)."""
    _main()


if __name__ == "__main__":
    main()
