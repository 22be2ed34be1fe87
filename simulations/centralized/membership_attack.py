"""The membership-inference attack of the privacy audit, and what its guesses prove (issue 15).

The attack is the likelihood-ratio attack of Carlini et al. (2022, "Membership Inference Attacks
From First Principles") in its *offline* form: the attacker trains shadow models on data it can
get, fresh synthetic cohorts, none of which holds the canaries, and so learns how each canary
scores on a model that never saw it. A canary the target scores far above that is likely a member:

    score_i = (phi_target_i - mean_s phi_shadow_{s,i}) / sigma

``phi`` is the logit-scaled confidence in the canary's label, log p_y / (1 - p_y) (for two
classes the logit margin z_y - z_{1-y}), averaged over the test-time views; ``sigma`` one spread
pooled over canaries and shadows (per-canary spreads need dozens of shadows; with a few the
pooled one is the stronger test, as the paper recommends).

What the guesses prove is the one-run lower bound of Steinke, Nasr and Jagielski (2023,
"Privacy Auditing with One (1) Training Run"): every canary is included independently with
probability 1/2; the attacker guesses "member" for its k highest scores and "non-member" for its k
lowest and abstains on the rest. Under epsilon-DP the number of right guesses among the r = 2k is
dominated by Binomial(r, e^eps / (1 + e^eps)), so v right guesses reject every epsilon under which
v or more is less likely than ``beta``: the lower bound is the log-odds of the one-sided
Clopper-Pearson lower limit of v / r. Every k tried splits ``beta`` (Bonferroni), so searching
over k does not buy a larger bound. This is the pure-DP form: with delta > 0 the paper's bound
is smaller still, so a measured bound under the accountant's epsilon stays so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import beta as beta_distribution
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["logit_confidence", "lira_offline_scores", "attack_metrics", "one_run_epsilon_lower_bound"]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y / (1 - p_y) of each row's label, computed from the logits without rounding p.

    Args:
        logits: [N, C] class logits; labels: [N] int class of each row.
    Returns:
        [N] float64.
    """
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(logits))
    own = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    top = others.max(axis=1, keepdims=True)
    log_rest = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))  # log sum_{c != y} e^{z_c}
    return own - log_rest


def lira_offline_scores(target: np.ndarray, shadows_out: np.ndarray) -> np.ndarray:
    """Offline likelihood-ratio scores: how far above the shadows' (OUT) confidence the target's lies.

    Args:
        target: [M] logit confidence of the target model in each canary's label.
        shadows_out: [S, M] the same of S shadow models that never saw any canary (S >= 2).
    Returns:
        [M] scores, higher = more likely a member.
    """
    shadows_out = np.asarray(shadows_out, dtype=np.float64)
    if shadows_out.ndim != 2 or shadows_out.shape[0] < 2 or shadows_out.shape[1] != len(target):
        raise ValueError(f"need [S >= 2, {len(target)}] shadow confidences, got {shadows_out.shape}")
    mean = shadows_out.mean(axis=0)
    sigma = float(np.sqrt(((shadows_out - mean) ** 2).sum() / (shadows_out.size - shadows_out.shape[1])))
    return (np.asarray(target, dtype=np.float64) - mean) / max(sigma, 1e-12)


def attack_metrics(scores: np.ndarray, members: np.ndarray, fpr: float = 0.01) -> dict:
    """Attack AUC and the true-positive rate at false-positive rate ``fpr`` (at most), with counts.

    Args:
        scores: [M] attack scores (higher = member); members: [M] bool, the truth.
    """
    members = np.asarray(members, dtype=bool)
    if members.all() or not members.any():
        raise ValueError("the canaries need members and non-members to score an attack")
    false_positive, true_positive, _ = roc_curve(members, scores)
    return {"auc": float(roc_auc_score(members, scores)),
            f"tpr_at_{fpr:g}_fpr": float(true_positive[false_positive <= fpr].max()),
            "members": int(members.sum()), "non_members": int((~members).sum())}


def one_run_epsilon_lower_bound(scores: np.ndarray, members: np.ndarray, *, beta: float = 0.05,
                                guess_counts: Sequence[int] | None = None) -> dict:
    """Steinke et al.'s one-run epsilon lower bound at confidence 1 - ``beta`` (module docstring).

    Args:
        scores: [M] attack scores; members: [M] bool, each drawn independently with probability 1/2.
        guess_counts: the r = 2k guesses to try (default: 2, 4, 8, ... up to M); beta is split among them.
    Returns:
        ``{"epsilon": bound >= 0, "guesses": r, "correct": v, "confidence": 1 - beta}`` of the best r.
    """
    scores, members = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    counts = list(guess_counts) if guess_counts else [2 ** i for i in range(1, int(np.log2(len(scores))) + 1)]
    best = {"epsilon": 0.0, "guesses": 0, "correct": 0, "confidence": 1.0 - beta}
    for r in counts:
        k = r // 2
        if k < 1 or 2 * k > len(scores):
            continue
        correct = int(members[order[:k]].sum() + (~members[order[-k:]]).sum())
        p_low = float(beta_distribution.ppf(beta / len(counts), correct, 2 * k - correct + 1)) if correct > 0 else 0.0
        epsilon = float(np.log(p_low / (1.0 - p_low))) if p_low > 0.5 else 0.0
        if epsilon > best["epsilon"] or best["guesses"] == 0:
            best = {"epsilon": epsilon, "guesses": 2 * k, "correct": correct, "confidence": 1.0 - beta}
    return best
