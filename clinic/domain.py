"""Is an image inside the model's domain? The warnings ``ecs-screen`` and ``ecs-evaluate`` attach.

The model was trained on grayscale transvaginal B-mode ultrasound, preprocessed by the bundle's
recipe. A file that is not ultrasound is *refused* (no probability). Everything else is scored,
with a warning for each way it differs from the training data:

* no Sequence of Ultrasound Regions: no crop to the tissue region, the whole screen is used;
* unknown pixel spacing: the scale of the anatomy cannot be checked (and is not resampled when
  the recipe asks for a fixed spacing);
* colour: more than :data:`COLOR_SHARE` of the tissue region is coloured (colour or power
  Doppler, a colour overlay), which training never saw;
* no fan found, or more than :data:`ANNOTATION_SHARE` of the pixels in-painted as burned-in text
  and calipers: the cleaned image may have lost anatomy;
* intensity: the frame's mean or spread of lit pixels lies outside the central 99 % of the
  training frames (the bundle's ``input.intensity``; absent for federated bundles).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecs_models.inputs import intensity_features

__all__ = ["ANNOTATION_SHARE", "COLOR_SHARE", "Verdict", "assess"]

COLOR_SHARE = 0.02  # burned-in coloured text and calipers stay well under this share of the region
ANNOTATION_SHARE = 0.10


class Verdict:
    """``refused``: a reason when the file must not be scored, else None; ``warnings``: strings."""

    def __init__(self) -> None:
        self.refused: str | None = None
        self.warnings: list[str] = []


def _intensity_warnings(frames: np.ndarray, intensity: dict[str, Any] | None) -> list[str]:
    if not intensity:
        return []
    low_mean, high_mean = intensity["mean"][0], intensity["mean"][-1]
    low_std, high_std = intensity["std"][0], intensity["std"][-1]
    out = []
    for index, frame in enumerate(frames):
        mean, std = intensity_features(frame)
        where = f" (frame {index})" if len(frames) > 1 else ""
        if not low_mean <= mean <= high_mean:
            out.append(f"intensity unlike the training images{where}: mean brightness {mean:.3f}, "
                       f"training frames {low_mean:.3f}-{high_mean:.3f}")
        if not low_std <= std <= high_std:
            out.append(f"contrast unlike the training images{where}: spread {std:.3f}, "
                       f"training frames {low_std:.3f}-{high_std:.3f}")
    return out


def assess(meta: dict[str, Any], frames: np.ndarray, intensity: dict[str, Any] | None) -> Verdict:
    """Warnings for one preprocessed file.

    Args:
        meta: ``client.data.pipeline.PreprocessedFile.meta`` of the file.
        frames: its preprocessed frames, float32 ``[F, S, S]`` in [0, 1].
        intensity: the bundle's training intensity statistics, or None.
    """
    verdict = Verdict()
    modality = meta.get("modality")
    if modality != "US":
        verdict.refused = f"not ultrasound (modality {modality}): the model reads transvaginal ultrasound only"
        verdict.warnings.append(verdict.refused)
        return verdict
    if meta.get("region") is None:
        verdict.warnings.append("no ultrasound region in the file (Sequence of Ultrasound Regions): "
                                "the whole image was used, not the tissue region")
    if not meta.get("spacing_mm"):
        verdict.warnings.append("pixel spacing unknown: the scale of the anatomy cannot be checked")
    color = meta.get("color_fraction")
    if color is not None and color > COLOR_SHARE:
        verdict.warnings.append(f"colour in {100 * color:.0f} % of the image (colour Doppler or an overlay): "
                                "the model was trained on grayscale B-mode")
    if meta.get("fan_found") is False:
        verdict.warnings.append("no ultrasound fan found: the image may not be a B-mode sector scan")
    annotated = meta.get("annotation_fraction") or 0.0
    if annotated > ANNOTATION_SHARE:
        verdict.warnings.append(f"{100 * annotated:.0f} % of the pixels in-painted as burned-in text or "
                                "calipers: anatomy may be lost")
    verdict.warnings.extend(_intensity_warnings(frames, intensity))
    return verdict
