"""An exported model bundle's ONNX graph, ready to score model inputs: ONNX Runtime and numpy only.

One implementation for everyone who scores a bundle (``ecs-screen`` and ``ecs-evaluate`` through
:class:`clinic.model.ScreeningModel`, the run report through
:class:`simulations.report.scoring.BundleScorer`); it imports no torch, so it runs on the clinic
install. The graph has batch 1 (as exported), so frames are run one at a time.
"""

from __future__ import annotations

import numpy as np

from ecs_models.bundle_format import BundleError, BundleSpec

__all__ = ["BundleSession", "softmax_invasion"]


def softmax_invasion(logits: np.ndarray) -> np.ndarray:
    """P(class 1) from logits ``[N, 2]``, float64 ``[N]``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


class BundleSession:
    """ONNX Runtime session of ``spec``'s graph on ``threads`` intra-op threads (1: one core).

    Raises:
        BundleError: ONNX Runtime cannot load the graph.
    """

    def __init__(self, spec: BundleSpec, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(spec.onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise BundleError(f"{spec.onnx_path}: ONNX Runtime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """P(invasion) of model inputs ``[N, R, R]`` in [-1, 1], float64 ``[N]``."""
        out = [self.session.run(None, {self.input_name: frame[None, None].astype(np.float32)})[0]
               for frame in inputs]
        return softmax_invasion(np.concatenate(out, axis=0)) if out else np.zeros(0)
