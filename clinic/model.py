"""A model bundle ready to score DICOM files: the recorded preprocessing, then ONNX Runtime.

:class:`ScreeningModel` rebuilds the training input recipe from ``operating_point.json``
(:func:`ecs_models.bundle_format.read_bundle`): ``PreprocessConfig`` with every recorded field,
run by the data layer's own :func:`client.data.pipeline.load_preprocessed`, then
:func:`ecs_models.inputs.model_input` (resize to the model's side, [-1, 1]). A bundle made by
another version of the preprocessing pipeline is refused: its pixels would differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client.data.cache import PreprocessedCache
from client.data.pipeline import load_preprocessed
from ecs_models.bundle_format import BundleError, BundleSpec, read_bundle
from ecs_models.bundle_session import BundleSession, softmax_invasion
from ecs_models.inputs import model_input
from ecs_models.preprocessing import PIPELINE_VERSION, PreprocessConfig

__all__ = ["Prepared", "ScreeningModel", "softmax_invasion"]


@dataclass(frozen=True)
class Prepared:
    """One file made model-ready. ``frames``: float32 ``[F, S, S]`` in [0, 1] (data layer output);
    ``inputs``: float32 ``[F, R, R]`` in [-1, 1] (model input); ``meta``: the data layer's facts."""

    path: Path
    frames: np.ndarray
    inputs: np.ndarray
    meta: dict[str, Any]


class ScreeningModel:
    """A bundle (folder, ``.onnx`` or ``operating_point.json``) loaded for scoring.

    Args:
        model: the bundle path.
        threads: ONNX Runtime intra-op threads (1: one core, the clinic default).

    Raises:
        BundleError: unusable bundle, another pipeline version, or a model ONNX Runtime cannot load.
    """

    def __init__(self, model: str | Path, *, threads: int = 1) -> None:
        self.spec: BundleSpec = read_bundle(model)
        if self.spec.pipeline_version != PIPELINE_VERSION:
            raise BundleError(f"{self.spec.onnx_path}: made with preprocessing pipeline version "
                              f"{self.spec.pipeline_version}, this install has {PIPELINE_VERSION}; use a matching ecs-fl")
        try:
            self.preprocess = PreprocessConfig(**self.spec.preprocess)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{self.spec.onnx_path}: recorded preprocessing not understood ({exc})") from None
        self.graph = BundleSession(self.spec, threads)

    @property
    def threshold(self) -> float:
        """The bundle's operating point: probability >= threshold is a positive screen."""
        return self.spec.threshold

    def prepare(self, path: str | Path, cache: PreprocessedCache | None = None) -> Prepared:
        """Decode and preprocess ``path`` exactly as training did (through ``cache`` when given).

        Raises:
            client.data.decode.DicomDecodeError: the file cannot be used (``.reason`` says why).
        """
        loaded = load_preprocessed(path, self.preprocess, cache)
        return Prepared(Path(path), loaded.image, model_input(loaded.image, self.spec.size), loaded.meta)

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """P(invasion) of model inputs ``[N, R, R]`` in [-1, 1], float64 ``[N]`` (one run per frame:
        the exported graph has batch 1)."""
        return self.graph.probabilities(inputs)
