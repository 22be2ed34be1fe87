"""Synthesis quality of MRI -> US translation, on paired renders that are never trained on.

(a) **Structure preservation** (:func:`structure_metrics`): the synthetic US made from a
paired MR is compared with the true US render of the same anatomy, inside the fan:

* SSIM (Gaussian window, sigma 1.5 px) on *despeckled* images (3x3 median, then Gaussian
  sigma 1 px at the evaluation size): speckle is random per render, so raw-pixel SSIM would
  mostly measure the noise; despeckled SSIM measures the anatomy's layout and echogenicity.
* Dice of tissue masks recovered from the image by one fixed, simple method: 1-D k-means
  (k = 3) of despeckled intensities inside the fan; the darkest cluster is the *hypoechoic*
  mask (truth: fluid, fibroid, bone, bowel gas: the tissues below ~0.17 of full scale on
  the cohort's renders) and the middle cluster the *uterus* mask (truth: uterine tissues).
  The same method on the true US render gives the **ceiling** (``*_ceiling`` keys): how
  much of the tissue map intensity alone can recover on real US at all.
* ``ssim_mri_input``: SSIM of the (fan-masked) MR input itself against the true US, the
  "no translation" floor.

(b) **Distribution distance** (:func:`kid`): Kernel Inception Distance, i.e. the unbiased
MMD^2 with the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets,
on features from any callable (our trained teacher later; no pretrained Inception offline).

All results are plain ``dict[str, float]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from simulations.cohort.anatomy import UTERINE_TISSUES, Tissue

__all__ = [
    "HYPOECHOIC_TISSUES",
    "RandomConvFeatures",
    "despeckle",
    "dice",
    "extract_features",
    "intensity_clusters",
    "kid",
        "ssim",
    "structure_metrics",
]

HYPOECHOIC_TISSUES = (Tissue.FLUID, Tissue.FIBROID, Tissue.BONE, Tissue.BOWEL_GAS)


def despeckle(image: np.ndarray, median_px: int = 3, sigma_px: float = 1.0) -> np.ndarray:
    """Median then Gaussian filter of a float ``[H, W]`` image (pixels)."""
    return ndimage.gaussian_filter(ndimage.median_filter(np.asarray(image, np.float32), median_px), sigma_px)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, *, data_range: float = 1.0,
         sigma_px: float = 1.5) -> float:
    """Mean structural similarity of two ``[H, W]`` images (Gaussian-weighted, Wang et al. 2004).

    ``mask`` (bool ``[H, W]``) restricts the mean of the SSIM map; ``data_range`` is the
    dynamic range of the pixel values (1 for [0, 1]). Identical images give exactly 1.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: ndimage.gaussian_filter(x, sigma_px, truncate=3.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    if mask is not None:
        if not mask.any():
            return float("nan")
        ssim_map = ssim_map[mask]
    return float(ssim_map.mean())


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice overlap of two bool masks; 1.0 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    total = pred.sum() + target.sum()
    return 1.0 if total == 0 else float(2.0 * (pred & target).sum() / total)


def intensity_clusters(image: np.ndarray, mask: np.ndarray, k: int = 3, iterations: int = 30) -> np.ndarray:
    """1-D k-means of ``image`` values inside ``mask``; int ``[H, W]``: 0 = darkest .. k-1, -1 outside.

    Deterministic: centres start evenly spaced between the 1st and 99th percentiles (quantile
    starts would put two centres in the dominant background level).
    """
    labels = np.full(image.shape, -1, dtype=np.int64)
    values = np.asarray(image, np.float64)[mask]
    if values.size == 0:
        return labels
    centres = np.linspace(*np.quantile(values, (0.01, 0.99)), k)
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        updated = np.array([values[assign == j].mean() if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(updated, centres):
            break
        centres = updated
    order = np.argsort(centres)  # relabel so that 0 is darkest
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    labels[mask] = rank[np.argmin(np.abs(values[:, None] - centres[None]), axis=1)]
    return labels


def _recovered_dice(image: np.ndarray, tissue: np.ndarray, fan: np.ndarray) -> tuple[float, float]:
    clusters = intensity_clusters(image, fan)
    hypo = dice(clusters == 0, np.isin(tissue, HYPOECHOIC_TISSUES) & fan)
    uterus = dice(clusters == 1, np.isin(tissue, UTERINE_TISSUES) & fan)
    return hypo, uterus


def structure_metrics(synthetic_us: torch.Tensor, true_us: torch.Tensor, tissue: np.ndarray, fan: np.ndarray,
                      mri_input: torch.Tensor | None = None) -> dict[str, float]:
    """SSIM and recovered-tissue Dice of synthetic vs true US renders of the same anatomy.

    Args:
        synthetic_us, true_us: ``[N, 1, S, S]`` in [-1, 1] (same anatomy, same grid).
        tissue: uint8 ``[N, S, S]`` tissue codes; fan: bool ``[N, S, S]``.
        mri_input: optional ``[N, 1, S, S]`` MR inputs, for the ``ssim_mri_input`` floor.

    Returns:
        Means over the N pairs: ``ssim``, ``dice_hypoechoic``, ``dice_uterus``, their real-US
        ``*_ceiling`` values, ``ssim_mri_input`` (if given) and ``n_pairs``.
    """
    def unit(images: torch.Tensor) -> np.ndarray:
        return ((images.detach().cpu().numpy()[:, 0].astype(np.float64) + 1.0) / 2.0).clip(0, 1)

    fake, real = unit(synthetic_us), unit(true_us)
    mri = unit(mri_input) if mri_input is not None else None
    rows: dict[str, list[float]] = {}
    for i in range(len(real)):
        fan_i = ndimage.binary_erosion(fan[i], iterations=2)  # keep the fan edge out of it
        fake_d, real_d = despeckle(fake[i] * fan[i]), despeckle(real[i] * fan[i])
        hypo, uterus = _recovered_dice(fake_d, tissue[i], fan_i)
        hypo_ceiling, uterus_ceiling = _recovered_dice(real_d, tissue[i], fan_i)
        values = {"ssim": ssim(fake_d, real_d, fan_i), "dice_hypoechoic": hypo, "dice_uterus": uterus,
                  "dice_hypoechoic_ceiling": hypo_ceiling, "dice_uterus_ceiling": uterus_ceiling}
        if mri is not None:
            values["ssim_mri_input"] = ssim(despeckle(mri[i] * fan[i]), real_d, fan_i)
        for name, value in values.items():
            rows.setdefault(name, []).append(value)
    out = {name: float(np.nanmean(values)) for name, values in rows.items()}
    out["n_pairs"] = float(len(real))
    return out


@torch.no_grad()
def extract_features(feature_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     batch_size: int = 32) -> torch.Tensor:
    """``feature_fn`` over ``images`` ``[N, 1, S, S]`` in batches -> float64 CPU ``[N, D]``.

    Feature maps ``[B, C, H, W]`` are global-average-pooled to ``[B, C]``.
    """
    chunks = []
    for chunk in images.split(batch_size):
        feats = feature_fn(chunk)
        if feats.dim() == 4:
            feats = feats.mean(dim=(2, 3))
        chunks.append(feats.flatten(1).double().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0, dtype=torch.float64)


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int, coef: float) -> torch.Tensor:
    dim = x.shape[1]
    k_xx = (x @ x.T / dim + coef) ** degree
    k_yy = (y @ y.T / dim + coef) ** degree
    k_xy = (x @ y.T / dim + coef) ** degree
    m, n = len(x), len(y)
    sum_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    sum_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return sum_xx + sum_yy - 2 * k_xy.mean()


def kid(features_a: torch.Tensor, features_b: torch.Tensor, *, subsets: int = 50, subset_size: int = 100,
        degree: int = 3, coef: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance between two feature sets ``[N, D]`` and ``[M, D]``.

    Unbiased MMD^2 with kernel ``(x.y / D + coef)^degree`` on ``subsets`` random subsets of
    ``min(subset_size, N, M)`` rows each (without replacement within a subset).

    Returns:
        ``{"kid": mean, "kid_std": std over subsets, "kid_subset_size": size}``; near 0 for
        samples of one distribution (it can be slightly negative), > 0 when they differ.
    """
    a, b = features_a.double(), features_b.double()
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("KID needs at least 2 feature rows on each side")
    rng = torch.Generator().manual_seed(seed)
    values = torch.stack([
        _mmd2_unbiased(a[torch.randperm(len(a), generator=rng)[:size]],
                       b[torch.randperm(len(b), generator=rng)[:size]], degree, coef)
        for _ in range(subsets)
    ])
    return {"kid": float(values.mean()), "kid_std": float(values.std()) if subsets > 1 else 0.0,
            "kid_subset_size": float(size)}


class RandomConvFeatures(nn.Module):
    """A fixed random-init conv net ``[B, 1, S, S] -> [B, 4 * width]`` (multi-scale pooled).

    A stand-in when no trained feature extractor (e.g. the screening teacher) is available:
    three stride-2 3x3 convs with LeakyReLU, He-normal weights drawn from ``seed``, the mean
    of each stage's map concatenated. Random conv features still separate intensity and
    texture statistics, but KIDs on them are not comparable with KIDs on trained features.
    """

    def __init__(self, seed: int = 0, width: int = 32) -> None:
        super().__init__()
        channels = [1, width, width, 2 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[i], channels[i + 1], 3, 2, 1), nn.LeakyReLU(0.2))
            for i in range(3)
        )
        generator = torch.Generator().manual_seed(seed)
        for param in self.parameters():
            if param.dim() > 1:
                std = (2.0 / param[0].numel()) ** 0.5
            else:
                std = 0.1
            param.data = torch.randn(param.shape, generator=generator) * std
            param.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3)))  # [B, C_i]
        return torch.cat(pooled, dim=1)
