"""Raw scores of a run's exported model on its cohort's held-out centers, for the report's ROC
curves with patient-level intervals, the simulated sonographer and the saliency maps.

The bundle (``model/lsnet.onnx`` + ``operating_point.json``) is scored as a hospital would score
it with ``ecs-evaluate``: the recorded preprocessing through the data layer
(:func:`client.data.pipeline.load_preprocessed`, the run's cache), :func:`ecs_models.inputs.model_input`,
ONNX Runtime on one thread. A federated run's own figures come from per-class histograms without
patient ids; scoring its bundle here gives the patient-level bootstrap the histograms cannot.
A file's score is the mean over its selected frames, as in ``ecs-screen``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.data.cache import PreprocessedCache
from client.data.labels import read_label_file
from client.data.pipeline import load_preprocessed
from ecs_models.bundle_format import read_bundle
from ecs_models.bundle_session import BundleSession
from ecs_models.inputs import model_input
from ecs_models.preprocessing import PreprocessConfig
from ecs_models.saliency import occlusion_map, overlay_rgb

__all__ = ["CenterScores", "BundleScorer", "score_centers", "saliency_tiles"]


@dataclass
class CenterScores:
    """One center's scored ultrasound files: ``labels`` int [N], ``scores`` float [N] (P(invasion)),
    ``patients`` [N] ids, ``files`` [N] paths, ``inputs`` the model inputs float32 [N, R, R] in
    [-1, 1] (first selected frame; kept for saliency); ``total``: the center's ultrasound files
    (more than N when capped)."""

    labels: np.ndarray
    scores: np.ndarray
    patients: list[str]
    files: list[Path]
    inputs: np.ndarray
    total: int


class BundleScorer:
    """A run's bundle, loaded for scoring (ONNX Runtime, one thread)."""

    def __init__(self, bundle_dir: Path, cache_dir: Path | None = None) -> None:
        self.spec = read_bundle(bundle_dir)
        self.preprocess = PreprocessConfig(**self.spec.preprocess)
        self.graph = BundleSession(self.spec, threads=1)
        self.cache = PreprocessedCache(cache_dir) if cache_dir is not None else None

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """P(invasion) of model inputs float [N, R, R] in [-1, 1]: float64 [N]."""
        return self.graph.probabilities(inputs)

    def inputs(self, path: Path) -> np.ndarray:
        """Model inputs of one DICOM file: float32 [F, R, R] in [-1, 1]."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            loaded = load_preprocessed(path, self.preprocess, self.cache)
        return model_input(loaded.image, self.spec.size)


def score_centers(scorer: BundleScorer, cohort_dir: Path, centers: list[str], max_files: int | None = None) -> dict[str, CenterScores]:
    """Score every ultrasound file (all splits) of each of ``centers`` (at most ``max_files`` each)."""
    out = {}
    for center in centers:
        every = [r for r in read_label_file(cohort_dir / center / "manifest.csv") if r.modality == "US"]
        rows = every[:max_files]
        labels, scores, patients, files, firsts = [], [], [], [], []
        for row in rows:
            path = cohort_dir / center / row.file
            x = scorer.inputs(path)
            labels.append(row.label)
            scores.append(float(np.mean(scorer.probabilities(x))))
            patients.append(row.patient_id)
            files.append(path)
            firsts.append(x[0])
        if rows:
            out[center] = CenterScores(np.asarray(labels, dtype=int), np.asarray(scores), patients, files, np.stack(firsts), len(every))
    return out


def saliency_tiles(scorer: BundleScorer, scored: dict[str, CenterScores], cases: int = 4) -> list[tuple[np.ndarray, str]]:
    """Occlusion saliency (:func:`ecs_models.saliency.occlusion_map`) of up to ``cases`` held-out
    files, positives with the highest scores first, then the negatives with the highest scores
    (the false alarms a reader would ask about). Returns ``(uint8 [R, R, 3] overlay, caption)``."""
    pool = [(c, i) for c, s in scored.items() for i in range(len(s.labels))]
    pool.sort(key=lambda ci: (-scored[ci[0]].labels[ci[1]], -scored[ci[0]].scores[ci[1]]))
    positives = [ci for ci in pool if scored[ci[0]].labels[ci[1]] == 1][: (cases + 1) // 2]
    negatives = [ci for ci in pool if scored[ci[0]].labels[ci[1]] == 0][: cases - len(positives)]
    tiles = []
    for center, i in positives + negatives:
        s = scored[center]
        image = s.inputs[i]
        saliency = occlusion_map(scorer.probabilities, image)
        caption = f"{center} y={s.labels[i]} P={s.scores[i]:.2f}"
        tiles.append((overlay_rgb(image, saliency), caption))
    return tiles
