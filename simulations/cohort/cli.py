"""``ecs-cohort``: the Hydra entry point that writes a synthetic cohort.

    ecs-cohort cohort=tiny output_dir=/tmp/tiny seed=0
    ecs-cohort cohort=quick workers=2 cohort.centers.clinic.n_us=60
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from simulations.cli_errors import user_errors
from simulations.cohort.generate import generate_cohort
from simulations.cohort.spec import cohort_spec_from_config


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="generate")
def _main(cfg: DictConfig) -> None:
    with user_errors("ecs-cohort"):
        try:
            spec = cohort_spec_from_config(OmegaConf.to_container(cfg.cohort, resolve=True))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"bad cohort config: {exc}") from None
        summary = generate_cohort(
            spec, cfg.output_dir, seed=int(cfg.seed), workers=int(cfg.workers), overwrite=bool(cfg.overwrite)
        )
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
