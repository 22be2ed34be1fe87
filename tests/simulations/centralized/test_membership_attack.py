"""The membership-inference attack's arithmetic (simulations.centralized.membership_attack): the
logit confidence, the offline LiRA score, the attack metrics and the one-run epsilon lower bound."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.centralized.membership_attack import (
    attack_metrics,
    lira_offline_scores,
    logit_confidence,
    one_run_epsilon_lower_bound,
)


def test_logit_confidence_is_log_odds_of_the_label_even_when_p_rounds_to_one() -> None:
    two = np.array([[0.0, 2.0], [3.0, -1.0], [40.0, -10.0]])
    np.testing.assert_allclose(logit_confidence(two, np.array([1, 1, 0])), [2.0, -4.0, 50.0])  # z_y - z_other
    three = np.array([[1.0, 2.0, 3.0]])
    p = np.exp(three[0]) / np.exp(three[0]).sum()
    np.testing.assert_allclose(logit_confidence(three, np.array([0])), [np.log(p[0] / (1 - p[0]))])


def test_lira_scores_measure_the_target_against_each_canarys_own_shadows() -> None:
    # canary 0 is easy (shadows score it high), canary 1 hard: the same target confidence 3.0
    # is unremarkable for the first and far above the shadows for the second
    shadows = np.array([[3.0, -2.0], [2.0, -3.0], [4.0, -1.0]])
    scores = lira_offline_scores(np.array([3.0, 3.0]), shadows)
    assert scores[1] > scores[0] and scores[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="shadow"):
        lira_offline_scores(np.zeros(2), shadows[:1])


def test_attack_metrics_of_a_perfect_a_useless_and_an_inverted_attack() -> None:
    members = np.array([True] * 50 + [False] * 50)
    perfect = attack_metrics(members.astype(float), members)
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.01_fpr"] == 1.0 and perfect["members"] == 50
    assert attack_metrics(np.zeros(100), members)["auc"] == 0.5
    assert attack_metrics(-members.astype(float), members)["auc"] == 0.0
    with pytest.raises(ValueError, match="non-members"):
        attack_metrics(np.zeros(3), np.ones(3, dtype=bool))


def test_the_lower_bound_is_zero_for_a_blind_guesser_and_grows_with_right_guesses() -> None:
    rng = np.random.default_rng(0)
    members = rng.random(1000) < 0.5
    assert one_run_epsilon_lower_bound(rng.random(1000), members)["epsilon"] == 0.0
    perfect = one_run_epsilon_lower_bound(members.astype(float) + rng.random(1000) * 0.1, members)
    # r right guesses of r: the bound is the log-odds of (beta / tries) ** (1 / r)
    r, tries = perfect["guesses"], 9  # guess counts 2, 4, ..., 512
    assert perfect["correct"] == r
    p = (0.05 / tries) ** (1 / r)
    assert perfect["epsilon"] == pytest.approx(np.log(p / (1 - p)), rel=1e-6)


def test_the_bound_is_valid_for_an_epsilon_dp_guesser() -> None:
    """Randomised response at epsilon 1 (each guess right with probability e/(1+e)): the bound
    exceeds 1 in at most 5 % of audits (here: none of 200), yet is above 0 in most."""
    rng = np.random.default_rng(1)
    p_right = np.e / (1 + np.e)
    bounds = []
    for _ in range(200):
        members = rng.random(400) < 0.5
        scores = np.where(rng.random(400) < p_right, members, ~members).astype(float) + rng.random(400) * 0.01
        bounds.append(one_run_epsilon_lower_bound(scores, members)["epsilon"])
    bounds = np.array(bounds)
    assert (bounds > 1.0).mean() <= 0.05
    assert (bounds > 0.0).mean() > 0.5
