"""The preprocessing recipe as data: :class:`PreprocessConfig` and the version of the pixels it gives.

The data layer (:mod:`client.data.preprocess`) runs the recipe; it lives here, below the data layer,
because a model is bound to it: the exported bundle records every field
(:mod:`ecs_models.bundle_format`), the server writes that bundle without importing the client, and
the clinic tools rebuild the config from it. Plain Python: no numpy, no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

__all__ = ["FIELDS_OF_VIEW", "FRAME_POLICIES", "PIPELINE_VERSION", "PreprocessConfig"]

PIPELINE_VERSION = 4  # bump when the pixels produced for the same config change (2: flat strokes, robust tint map; 3: calipers by shape; 4: a lone mark's partner, either-polarity labels, no saturated flat strokes)
FIELDS_OF_VIEW = ("apex", "fan")
FRAME_POLICIES = ("middle", "all", "stride")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a DICOM file becomes training frames.

    Attributes:
        frame_policy: ``"middle"``, ``"all"`` or ``"stride"`` (see ``decode.select_frame_indices``).
        frame_stride: every k-th frame for ``"stride"``.
        crop_to_region: US only, crop to the chosen 2D tissue region when the file has one.
        mask_fan: US only, zero the pixels outside the estimated fan.
        remove_annotations: US only, in-paint burned-in text and calipers.
        target_spacing_mm: resample to this isotropic pixel size (mm) when spacing is known.
        output_size: square output side in pixels (aspect kept); None keeps size.
        field_of_view: US only, ``"apex"`` (the square under the probe, side = image depth) or
            ``"fan"`` (the whole image letterboxed); see ``client.data.preprocess.square_window``.
    """

    frame_policy: str = "middle"
    frame_stride: int = 1
    crop_to_region: bool = True
    mask_fan: bool = True
    remove_annotations: bool = True
    target_spacing_mm: float | None = None
    output_size: int | None = 256
    field_of_view: str = "apex"

    def __post_init__(self) -> None:
        if self.frame_policy not in FRAME_POLICIES:
            raise ValueError(f"frame_policy {self.frame_policy!r} not in {FRAME_POLICIES}")
        if self.frame_stride < 1:
            raise ValueError("frame_stride must be >= 1")
        if self.target_spacing_mm is not None and not self.target_spacing_mm > 0:
            raise ValueError("target_spacing_mm must be > 0")
        if self.output_size is not None and self.output_size < 8:
            raise ValueError("output_size must be >= 8 pixels")
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise ValueError(f"field_of_view {self.field_of_view!r} not in {FIELDS_OF_VIEW}")

    def cache_key(self) -> str:
        """Stable 16-hex-digit key of the settings and :data:`PIPELINE_VERSION`."""
        payload = json.dumps({"v": PIPELINE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
