"""Evaluation histograms released under patient-level differential privacy.

Under local DP a site's evaluation reply is a release about its patients too: exact per-class
score histograms of a small validation split place nearly every patient's score and label. So a
site releases them through the Gaussian mechanism at the patient level:

1. **Bounded contribution.** The evaluation counts at most ``images_per_patient`` images of each
   patient (the first ones in the split's item order, a rule that does not look at any score).
   Adding or removing one patient then changes the concatenated histogram vector ``[neg, pos]``
   by at most ``images_per_patient`` in L2 norm (all of the patient's images in one bin): that
   public cap is the sensitivity, not the data-dependent largest image count.
2. **Noise.** Gaussian noise of standard deviation ``noise_multiplier x images_per_patient`` is
   added to every bin of both histograms; one such release is the Gaussian mechanism with noise
   multiplier ``noise_multiplier``, composed into the site's accountant as a ``gaussian`` event.
3. **Post-processing.** The noised counts are rounded and clipped at 0 (integers a reply can
   carry); the confusion matrix and the example count are derived from the noised histograms, so
   the reply is consistent (the server's checks hold) and reveals nothing beyond them.

Coarse bins help: the noise per bin does not depend on how many bins there are, the counts per
bin do. The server cannot know the exact counts, so it reports how much the noise can move a
pooled figure by re-noising the released histograms (:func:`noise_spread`, a parametric
bootstrap). Plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecs_models.training.binned_metrics import binned_auc, histogram_confusion

__all__ = ["first_images_per_patient", "noised_histograms", "noise_spread"]


def first_images_per_patient(patient_ids: Sequence[str], images_per_patient: int) -> list[int]:
    """Indices of the first ``images_per_patient`` items of every patient, in item order."""
    if images_per_patient < 1:
        raise ValueError(f"images_per_patient must be >= 1, got {images_per_patient}")
    seen: dict[str, int] = {}
    kept = []
    for index, patient in enumerate(patient_ids):
        if seen.get(patient, 0) < images_per_patient:
            seen[patient] = seen.get(patient, 0) + 1
            kept.append(index)
    return kept


def noised_histograms(neg: np.ndarray, pos: np.ndarray, std: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(neg, pos)`` int64 ``[bins]`` each: the counts plus N(0, ``std``^2) per bin, rounded, >= 0."""
    def noisy(counts: np.ndarray) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        return np.clip(np.rint(counts + rng.normal(0.0, std, counts.shape)), 0, None).astype(np.int64)

    return noisy(neg), noisy(pos)


def noise_spread(neg: np.ndarray, pos: np.ndarray, std: float, threshold: float, *,
                 draws: int = 200, seed: int = 0) -> dict[str, float]:
    """How much Gaussian noise of ``std`` per bin moves the metrics of released histograms.

    Re-noises the (already noised, pooled) histograms ``draws`` times and returns the standard
    deviations of the AUC, sensitivity and specificity at ``threshold`` over the draws: the
    expected movement due to the noise, computed from public quantities only. ``std``: the
    pooled histograms' noise per bin (sqrt of the sum of the sites' variances). NaN where a
    draw leaves a class empty.
    """
    rng = np.random.default_rng(seed)
    auc, sens, spec = [], [], []
    for _ in range(draws):
        n, p = noised_histograms(neg, pos, std, rng)
        c = histogram_confusion(n, p, threshold)
        auc.append(binned_auc(n, p))
        sens.append(c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else np.nan)
        spec.append(c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else np.nan)
    return {"noise_std_per_bin": float(std), "draws": int(draws),
            "auc_sd": float(np.nanstd(auc)), "sensitivity_sd": float(np.nanstd(sens)),
            "specificity_sd": float(np.nanstd(spec))}
