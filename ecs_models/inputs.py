"""What a classifier is fed, in numpy alone: the evaluation resize, the input range and the intensity
statistics of the training images.

The data layer (:mod:`client.data.preprocess`) gives frames in [0, 1] at ``PreprocessConfig
.output_size``; a classifier sees them resized to its input side and mapped to [-1, 1]. Training's
evaluation path (:class:`ecs_models.training.data.TransformedImages`, ``train=False``), the exported
bundle and the clinic tools all go through :func:`model_input`, so a model receives at screening
exactly what it was evaluated on. The resize is the antialiased bilinear filter of
``torchvision.transforms.v2.Resize(antialias=True)`` (PIL's triangle filter, stretched by the
scale when shrinking), written with separable weight matrices; a test pins it to torch's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INPUT_RANGE", "RESIZE_METHOD", "intensity_features", "intensity_summary", "model_input", "resize_bilinear"]

INPUT_RANGE = (-1.0, 1.0)  # model input = 2 * pixel - 1, pixel in [0, 1]
RESIZE_METHOD = "bilinear, antialiased (torchvision Resize antialias=True), ecs_models.inputs.resize_bilinear"
INTENSITY_QUANTILES = (0.005, 0.5, 0.995)


def _weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` row-normalised triangle-filter weights (align_corners=False)."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    out = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        taps = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((taps - center + 0.5) * inv), 0.0, None)
        total = w.sum()
        out[i, lo:hi] = w / total if total > 0 else 0.0
    return out


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of the last two axes to ``size x size``.

    Args:
        images: float ``[..., H, W]``.
        size: output side in pixels.

    Returns:
        float32 ``[..., size, size]`` (the input itself, as float32, when already that size).
    """
    images = np.asarray(images, dtype=np.float32)
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    rows, cols = _weights(height, size), _weights(width, size)  # [size, H], [size, W]
    out = np.einsum("rh,...hw,cw->...rc", rows, images.astype(np.float64), cols, optimize=True)
    return out.astype(np.float32)


def model_input(images: np.ndarray, size: int) -> np.ndarray:
    """Preprocessed frames -> classifier input: clip to [0, 1], :func:`resize_bilinear`, ``2 x - 1``.

    Args:
        images: float ``[..., S, S]`` in [0, 1] (``client.data`` output).
        size: the model's input side.

    Returns:
        float32 ``[..., size, size]`` in [-1, 1].
    """
    resized = resize_bilinear(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0), size)
    return (resized * np.float32(2.0) - np.float32(1.0)).astype(np.float32, copy=False)


def intensity_features(image: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the lit pixels (> 0: inside the fan) of one preprocessed frame.

    Args:
        image: float ``[S, S]`` in [0, 1].

    Returns:
        ``(mean, std)`` in [0, 1] units; ``(0.0, 0.0)`` for an all-black frame.
    """
    lit = np.asarray(image, dtype=np.float64)[np.asarray(image) > 0]
    if lit.size == 0:
        return 0.0, 0.0
    return float(lit.mean()), float(lit.std())


def intensity_summary(images: np.ndarray | list[np.ndarray]) -> dict:
    """Training-set intensity statistics the bundle carries for the clinic's domain check.

    Args:
        images: preprocessed frames, ``[N, S, S]`` or a list of ``[S, S]``, in [0, 1].

    Returns:
        ``{"n_images", "quantiles", "mean": [...], "std": [...]}``: the :data:`INTENSITY_QUANTILES`
        of the per-frame :func:`intensity_features`.
    """
    features = np.array([intensity_features(image) for image in images], dtype=np.float64).reshape(-1, 2)
    if len(features) == 0:
        raise ValueError("no images to summarise")
    q = np.quantile(features, INTENSITY_QUANTILES, axis=0)  # [3, 2]
    return {"n_images": len(features), "quantiles": list(INTENSITY_QUANTILES),
            "mean": [round(float(v), 6) for v in q[:, 0]], "std": [round(float(v), 6) for v in q[:, 1]]}
