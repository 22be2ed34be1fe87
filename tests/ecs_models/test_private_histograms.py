"""Evaluation histograms released under local DP: bounded contribution per patient, the Gaussian
mechanism composed into the site's accountant, a decline over budget, and the noise estimate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from client.privacy import BudgetExhausted, evaluation_release, release_histograms
from ecs_models.training.binned_metrics import histogram_confusion, score_histograms
from ecs_models.training.dp_sgd import PrivacyAccount
from ecs_models.training.private_histograms import (
    first_images_per_patient,
    noise_spread,
    noised_histograms,
)
from protocol.messages import LocalDp
from server.privacy_ledger import epsilon_from_events

SETTING = LocalDp(target_epsilon=3.0, delta=1e-3, clipping_norm=1.0, noise_multiplier=0.0, planned_rounds=4,
                  eval_noise_multiplier=4.0, eval_images_per_patient=2)


def test_an_evaluation_counts_at_most_the_cap_of_one_patients_images() -> None:
    patients = ["a", "a", "b", "a", "c", "b", "b", "a"]
    assert first_images_per_patient(patients, 1) == [0, 2, 4]
    kept = first_images_per_patient(patients, 2)
    assert kept == [0, 1, 2, 4, 5]
    # so adding or removing a patient moves the histogram vector by at most the cap (L2)
    rng = np.random.default_rng(0)
    scores, labels = rng.random(len(patients)), rng.integers(0, 2, len(patients))
    without_a = [i for i in kept if patients[i] != "a"]
    full = np.concatenate(score_histograms(labels[kept], scores[kept], 10))
    less = np.concatenate(score_histograms(labels[without_a], scores[without_a], 10))
    assert np.linalg.norm(full - less) <= 2
    with pytest.raises(ValueError, match="images_per_patient"):
        first_images_per_patient(patients, 0)


def test_noised_histograms_are_non_negative_counts_around_the_true_ones() -> None:
    neg, pos = np.full(10, 50), np.arange(10) * 10
    rng = np.random.default_rng(1)
    draws = [noised_histograms(neg, pos, 4.0, rng) for _ in range(400)]
    assert all(d.dtype == np.int64 and (d >= 0).all() for pair in draws for d in pair)
    mean_neg = np.mean([n for n, _ in draws], axis=0)
    assert np.abs(mean_neg - 50).max() < 1.0  # unbiased where clipping at 0 does not bite
    assert noised_histograms(neg, pos, 0.0, rng)[1].tolist() == pos.tolist()


def test_a_release_is_one_gaussian_event_and_over_budget_the_site_declines() -> None:
    account = PrivacyAccount("rdp", SETTING.delta, SETTING.clipping_norm, 1.5)
    neg, pos = np.full(10, 3), np.full(10, 2)
    released = release_histograms(account, SETTING, neg, pos, np.random.default_rng(0))
    assert account.events() == [{"kind": "gaussian", "noise_multiplier": 4.0, "count": 1}]
    assert released[0].shape == (10,) and not np.array_equal(np.concatenate(released), np.concatenate([neg, pos]))
    account.add(1.5, 0.2, 24)  # DP-SGD spends most of the budget (epsilon 2.99 of 3, 3.12 with one more release)
    spent = account.epsilon()
    assert spent < SETTING.target_epsilon < account.epsilon(evaluation_release(account, SETTING))
    with pytest.raises(BudgetExhausted, match="releasing this evaluation"):
        release_histograms(account, SETTING, neg, pos, np.random.default_rng(0))
    assert account.epsilon() == spent  # nothing was released, nothing was accounted
    # the accountant's epsilon is what dp-accounting recomputes from the events
    assert account.epsilon() == pytest.approx(epsilon_from_events(account.events(), SETTING.delta, "rdp"), rel=0.01)


def test_derived_dp_sgd_noise_leaves_room_for_the_planned_releases() -> None:
    steps, q = 40, 0.25
    account = PrivacyAccount("rdp", SETTING.delta, 1.0)
    reserved = evaluation_release(account, SETTING, SETTING.planned_rounds + 1)
    alone = PrivacyAccount("rdp", SETTING.delta, 1.0).derive_noise(3.0, q, steps)
    z = account.derive_noise(3.0, q, steps, reserved=reserved)
    assert z > alone  # the releases take part of the budget
    assert 2.99 - 0.01 <= account.epsilon((z, q, steps), reserved) <= 3.0
    with pytest.raises(ValueError, match="evaluation releases at noise multiplier 0.5 alone.*budget_share"):
        PrivacyAccount("rdp", SETTING.delta, 1.0).derive_noise(3.0, q, steps, reserved=(0.5, 1.0, 5))


def test_without_a_fixed_z_the_releases_spend_their_share_of_the_budget() -> None:
    """eval_noise_multiplier 0: z is derived once per site, so that the planned releases (one per
    classifier round + the final) spend eval_budget_share of the target, whatever the target."""
    for target in (1.0, 8.0):
        setting = replace(SETTING, target_epsilon=target, eval_noise_multiplier=0.0, eval_budget_share=0.1)
        account = PrivacyAccount("rdp", setting.delta, 1.0)
        z, q, count = evaluation_release(account, setting, setting.planned_rounds + 1)
        assert (q, count) == (1.0, 5) and z == account.eval_noise_multiplier > 0
        assert 0.1 * target - 0.011 <= account.epsilon((z, 1.0, count)) <= 0.1 * target
        release_histograms(account, setting, np.ones(10, int), np.ones(10, int), np.random.default_rng(0))
        restored = PrivacyAccount.from_state_dict(account.state_dict())
        assert restored.eval_noise_multiplier == z and restored.entry()["evaluation_noise_multiplier"] == z
    assert evaluation_release(account, replace(setting, eval_noise_multiplier=6.0))[0] == 6.0  # a fixed z wins


def test_the_noise_estimate_grows_with_the_noise_and_the_confusion_is_read_off_the_histograms() -> None:
    neg, pos = np.array([30, 20, 10, 5, 0]), np.array([0, 5, 10, 20, 30])
    quiet, loud = (noise_spread(neg, pos, std, 0.5, draws=100) for std in (0.5, 8.0))
    assert 0 <= quiet["auc_sd"] < loud["auc_sd"] and quiet["sensitivity_sd"] < loud["sensitivity_sd"]
    confusion = histogram_confusion(neg, pos, 0.5)  # 5 bins: the middle bin holds 0.5 and is called positive
    assert confusion == {"tp": 60, "fn": 5, "fp": 15, "tn": 50}
