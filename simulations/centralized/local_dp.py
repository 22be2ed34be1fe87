"""``ecs-train privacy=local``: the pooled training run under the same patient-level DP-SGD as a
federated site (:mod:`ecs_models.training.dp_sgd`), one accountant over stages A and B.

The pooled training centers act as one data holder: the unit is a patient of any of them (ids
are prefixed with the center, so equal ids at two centers stay two patients); delta defaults to
1 / (10 x their patients, all splits); the noise multiplier comes from the target epsilon and the
planned steps of both stages (Opacus's ``get_noise_multiplier``), as at a site. The entry goes
to ``privacy.json`` (:func:`simulations.centralized.privacy.write_privacy_record`) and
``metrics.json``. Not covered, as in a federation: checkpoint selection and the operating point on
validation patients (no noise), and the SG-CycleGAN (refused: ``synthesis=false``; a federated
site trains it under DP-SGD, :mod:`ecs_models.training.gan_dp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from client.data.site_datasets import site_rows
from ecs_models.training.dp_sgd import (
    DpSgd,
    PatientSampler,
    PrivacyAccount,
    collate_or_empty,
    steps_per_epoch,
)

__all__ = ["PooledDp", "pooled_dp"]


class PooledDp:
    """The run's accountant and the DP-SGD set-up of each stage.

    Args:
        patients: the patient of every training item (``center/patient_id``), item order.
        delta: of every reported epsilon; batch_size: expected patients per step.
        stage_epochs: epochs of the stages that will run; max_steps: per-epoch cap or None.
    """

    def __init__(self, cfg: DictConfig, patients: Sequence[str], delta: float, *, batch_size: int,
                 stage_epochs: Sequence[int], max_steps: int | None) -> None:
        loc = cfg.privacy.local
        self.patients, self.seed = list(patients), int(cfg.seed)
        self.q, self.steps = steps_per_epoch(len(set(self.patients)), batch_size, max_steps)
        self.account = PrivacyAccount(str(loc.accountant), delta, float(loc.clipping_norm), float(loc.noise_multiplier or 0.0))
        self.account.derive_noise(float(loc.target_epsilon), self.q, sum(stage_epochs) * self.steps)

    def loader(self, dataset: Dataset, generator: torch.Generator) -> DataLoader:
        """Poisson batches of patients, one image each (``dataset`` in the order of ``patients``)."""
        if len(dataset) != len(self.patients):  # type: ignore[arg-type]
            raise ValueError(f"{len(dataset)} training items but {len(self.patients)} patient ids")  # type: ignore[arg-type]
        return DataLoader(dataset, batch_sampler=PatientSampler(self.patients, self.q, self.steps, generator),
                          collate_fn=collate_or_empty)

    def stage(self, index: int) -> DpSgd:
        n = len(set(self.patients))
        return DpSgd(self.account, sample_rate=self.q, expected_batch_size=self.q * n, seed=self.seed * 1000 + index)


def pooled_dp(cfg: DictConfig, cohort_dir: Path, centers: Sequence[str], datasets: Sequence, *,
              stage_epochs: Sequence[int]) -> PooledDp | None:
    """The DP-SGD of ``cfg`` over the training centers' ``datasets`` (one per center, in order), or None."""
    if str(cfg.privacy.mode) != "local":
        return None
    if cfg.synthesis:
        raise ValueError("privacy=local: the pooled run does not train the SG-CycleGAN under DP-SGD (a federated run "
                         "does: ecs-simulate privacy=local); set synthesis=false (docs/privacy.md)")
    if cfg.model.get("norm") != "group" or (cfg.distillation and cfg.teacher.get("norm") != "group"):
        raise ValueError("privacy=local needs GroupNorm models (model.norm=group, teacher.norm=group)")
    patients = [f"{c}/{p}" for c, ds in zip(centers, datasets, strict=True) for p in ds.patient_ids]
    everyone = {f"{c}/{r.patient_id}" for c in centers for m in ("US", "MR")
                for r in site_rows(cohort_dir / c, ["train", "val", "test", ""], m)}
    delta = float(cfg.privacy.local.delta or 1.0 / (10 * len(everyone)))
    return PooledDp(cfg, patients, delta, batch_size=int(cfg.training.batch_size), stage_epochs=stage_epochs,
                    max_steps=cfg.training.max_steps_per_epoch)
