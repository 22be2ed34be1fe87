"""A site's local differential privacy (``privacy=local|both``): its accountant, kept on its disk
across rounds, phases and restarts, and the DP-SGD set-up of one classifier round.

The privacy unit is the patient (:mod:`ecs_models.training.dp_sgd`): a real ultrasound image
belongs to its row's patient, a synthetic image to the patient of the MRI it was made from (the
same ``patient_id`` namespace of the site's label file, so one person with both is one unit).

Budget. The SG-CycleGAN's rounds, when they run under DP (:func:`private_gan_round`), have their
own noise multiplier, fixed at the first, so that the planned GAN steps spend a share of the
target. The classifiers' noise multiplier is fixed at the site's first classifier round, on top of
what the GAN spent, from the server's target epsilon and the steps the run plans
(``planned_rounds`` x local epochs x steps per epoch), with the sampling rate of the
real-ultrasound patients: stage A's pool, which adds MRI patients, samples each at a lower rate,
so the plan bounds it. Before a round the site computes the epsilon it
would have after it; over the target it declines (:class:`BudgetExhausted`) and trains nothing.

Evaluation. An evaluation reply is a release too: its histograms count at most
``eval_images_per_patient`` images of a patient and are noised by the Gaussian mechanism
(:func:`release_histograms`), one ``gaussian`` event in the same accountant, its noise
multiplier derived so that the planned releases spend ``eval_budget_share`` of the target (or
fixed by the server). The plan reserves
one release per classifier round (its validation) and one for the final evaluation, so the
DP-SGD noise is derived with room for them; a training round is declined unless it, its
validation and the final release all fit.

Secret randomness. The run's seed comes from the server, so the noise and the patient sampling
must not derive from it alone: the server could regenerate the noise and subtract it. They are
seeded from the round's seed mixed with a secret drawn once per run at the site (``secrets``,
kept in its state folder): a restarted site repeats its rounds, the server cannot predict them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from client.data.labels import read_label_file
from ecs_models.training.dp_sgd import (
    PatientSampler,
    PrivacyAccount,
    collate_or_empty,
    steps_per_epoch,
)
from ecs_models.training.private_histograms import noised_histograms
from protocol.messages import LocalDp, PrivacyReport

__all__ = ["BudgetExhausted", "site_patient_count", "load_account", "save_account", "report", "private_round",
           "private_gan_round", "secret_seed", "evaluation_release", "release_histograms"]

_STATE, _SECRET = "privacy-account", "privacy-secret"


class BudgetExhausted(Exception):
    """The next round would take the site over its budget: the typed decline to send instead."""

    def __init__(self, report: PrivacyReport) -> None:
        super().__init__(report.reason)
        self.report = report


def site_patient_count(label_file_rows: Sequence) -> int:
    """Distinct patients of the site's label file (every split and modality): delta's default
    is 1 / (10 x this), below one over the population a DP guarantee is about."""
    return len({row.patient_id for row in label_file_rows})


def load_account(site, run_key: str, setting: LocalDp) -> PrivacyAccount:  # noqa: ANN001 - client.task.Site
    """The site's accountant of run ``run_key`` (a fresh one before its first DP release)."""
    state = site.store(run_key).load(_STATE)
    if state is not None:
        return PrivacyAccount.from_state_dict(json.loads(state["json"]))
    delta = setting.delta or 1.0 / (10 * site_patient_count(read_label_file(site.data_dir / "manifest.csv")))
    return PrivacyAccount(setting.accountant, delta, setting.clipping_norm, setting.noise_multiplier)


def secret_seed(site, run_key: str, round_seed: int) -> int:  # noqa: ANN001
    """A 63-bit seed from ``round_seed`` and the site's secret of run ``run_key`` (drawn on first use)."""
    store = site.store(run_key)
    saved = store.load(_SECRET)
    if saved is None:
        saved = {"hex": secrets.token_hex(32)}
        store.save(_SECRET, saved)
    return int.from_bytes(hashlib.sha256(f"{saved['hex']}|{round_seed}".encode()).digest()[:8], "little") >> 1


def save_account(site, run_key: str, account: PrivacyAccount) -> None:  # noqa: ANN001
    site.store(run_key).save(_STATE, {"json": json.dumps(account.state_dict())})


def report(account: PrivacyAccount, reason: str = "") -> PrivacyReport:
    """The reply record: the ledger entry, and ``reason`` when the site declines."""
    return PrivacyReport(ledger=json.dumps(account.entry()), declined=bool(reason), reason=reason)


def private_round(account: PrivacyAccount, setting: LocalDp, dataset: Dataset, patients: Sequence[str],
                  us_patients: int, *, batch_size: int, epochs: int, max_steps: int | None,
                  generator: torch.Generator) -> tuple[DataLoader, float, int]:
    """The loader of one DP round and its ``(loader, q, steps)``; fixes the noise on first use.

    Args:
        dataset: the round's training items (real, then synthetic), ``patients[i]`` the patient of item i.
        us_patients: patients with real training ultrasound (the plan's pool, see the module docstring).
        batch_size: expected patients per step; epochs / max_steps: the round's local epochs and cap.
    Raises:
        BudgetExhausted: the round would take the epsilon above ``setting.target_epsilon``.
    """
    q_plan, per_epoch = steps_per_epoch(us_patients, batch_size, max_steps)
    steps = epochs * per_epoch
    z = account.derive_noise(setting.target_epsilon, q_plan, setting.planned_rounds * steps,
                             reserved=evaluation_release(account, setting, setting.planned_rounds + 1))
    q = min(1.0, batch_size / len(set(patients)))
    after = account.epsilon((z, q, steps), evaluation_release(account, setting, 2))  # + its validation and the final
    if after > setting.target_epsilon * (1 + 1e-6):
        raise BudgetExhausted(report(account, f"declined: {steps} more DP-SGD steps (and the round's validation and "
                                              f"the final evaluation) would take epsilon from "
                                              f"{account.epsilon():.3f} to {after:.3f}, over the budget "
                                              f"{setting.target_epsilon:g} (delta {account.delta:.3g})"))
    sampler = PatientSampler(patients, q, per_epoch, generator)  # train_stage iterates it once per epoch
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_or_empty), q, steps


def private_gan_round(account: PrivacyAccount, setting: LocalDp, dataset: Dataset, patients: Sequence[str], *,
                      batch_size: int, steps: int, generator: torch.Generator) -> tuple[DataLoader, float, float]:
    """The loader of one SG-CycleGAN round under DP-SGD (:mod:`ecs_models.training.gan_dp`) and its
    ``(loader, q, z)``; fixes the GAN's noise on first use.

    The GAN's noise is its own: the smallest z with which the run's planned GAN steps
    (``setting.gan_steps``) at this round's rate spend ``setting.gan_budget_share`` of the target
    (or the server's fixed z). The classifier rounds' noise is derived later, on top of what the
    GAN spent (:meth:`~ecs_models.training.dp_sgd.PrivacyAccount.derive_noise`).

    Args:
        dataset: ``(image, is_us)`` items, MRI and ultrasound; ``patients[i]`` the patient of item i.
        batch_size: expected patients per step; steps: the round's local steps.
    Raises:
        BudgetExhausted: the round (and the final evaluation) would take the epsilon above the target.
    """
    q = min(1.0, batch_size / len(set(patients)))
    if account.gan_noise_multiplier <= 0 and setting.noise_multiplier > 0:
        account.gan_noise_multiplier = setting.noise_multiplier
    z = account.derive_gan_noise(setting.gan_budget_share * setting.target_epsilon, q, max(setting.gan_steps, steps))
    after = account.epsilon((z, q, steps), evaluation_release(account, setting, 1))  # + the final evaluation
    if after > setting.target_epsilon * (1 + 1e-6):
        raise BudgetExhausted(report(account, f"declined: {steps} more DP-SGD steps of the SG-CycleGAN (and the final "
                                              f"evaluation) would take epsilon from {account.epsilon():.3f} to "
                                              f"{after:.3f}, over the budget {setting.target_epsilon:g} "
                                              f"(delta {account.delta:.3g})"))
    sampler = PatientSampler(patients, q, steps, generator)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_or_empty), q, z


def evaluation_release(account: PrivacyAccount, setting: LocalDp, count: int = 1) -> tuple[float, float, int]:
    """``count`` evaluation releases as accountant events ``(z, 1.0, count)`` (Gaussian mechanism).

    z is ``setting.eval_noise_multiplier``, or, when that is 0, fixed once in ``account``: the
    smallest with which the planned releases (one per classifier round and the final one) spend
    ``eval_budget_share`` of the target, so that the evaluation's cost scales with the budget.
    """
    z = setting.eval_noise_multiplier or account.derive_release_noise(
        setting.eval_budget_share * setting.target_epsilon, setting.planned_rounds + 1)
    return float(z), 1.0, int(count)


def release_histograms(account: PrivacyAccount, setting: LocalDp, neg: np.ndarray, pos: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One evaluation's histograms through the Gaussian mechanism (:mod:`ecs_models.training.private_histograms`),
    composed into ``account``. ``neg``/``pos``: int counts ``[bins]`` of at most
    ``setting.eval_images_per_patient`` images per patient.

    Raises:
        BudgetExhausted: the release would take the epsilon above ``setting.target_epsilon``.
    """
    release = evaluation_release(account, setting)
    after = account.epsilon(release)
    if after > setting.target_epsilon * (1 + 1e-6):
        raise BudgetExhausted(report(account, f"declined: releasing this evaluation would take epsilon from "
                                              f"{account.epsilon():.3f} to {after:.3f}, over the budget "
                                              f"{setting.target_epsilon:g} (delta {account.delta:.3g})"))
    released = noised_histograms(neg, pos, release[0] * setting.eval_images_per_patient, rng)
    account.add(*release)
    return released
