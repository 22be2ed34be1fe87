"""What the parts of a coordinator's run share (:class:`RunContext`): the grid, the resolved
configuration, the run's store and state, the sites; the messages built from the configuration;
and the conversions between Flower records, numpy arrays and the process's RNG state."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from ecs_models.training.distill import StageConfig
from protocol.messages import ClassifierTrain, GanTrain, ModelSpec, TrainRequest
from server.config import held_out_centers
from server.local_dp import check_local_dp, local_dp
from server.privacy import RunPrivacy
from server.sites import Sites
from server.store import RunStore
from strategies.factory import StrategySpec

__all__ = ["RunContext", "run_key", "model_spec", "to_numpy", "to_record", "torch_state", "rng_state", "set_rng_state", "fmt"]

Log = Callable[[str], None]
Arrays = dict[str, np.ndarray]


def run_key(run_dir: str | Path, seed: int) -> str:
    """The key of the sites' state of a run (FedBN layers, the local DP accountant): one per run
    folder and seed, the same when the run resumes. The folder's name alone is not unique (every
    arm of a comparison ends in ``seed<s>``): a digest of its full path is added."""
    resolved = Path(str(run_dir)).resolve()
    return f"{resolved.name}-seed{seed}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def model_spec(cfg: DictConfig) -> ModelSpec:
    """Model definitions sent to clients: student, teacher (or None) and GAN, as plain dicts."""
    student = OmegaConf.to_container(cfg.model, resolve=True)
    size = int(cfg.training.img_size)
    if student["name"] in ("lsnet", "teacher"):
        student["img_size"] = size
    teacher = None
    if cfg.distillation:
        teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
        teacher["img_size"] = size
    gan = {"name": str(cfg.gan.name), "preset": str(cfg.gan.preset), "image_size": int(cfg.gan.image_size)}
    return ModelSpec(student=student, teacher=teacher, gan=gan)


@dataclass
class RunContext:
    """One federated run's shared state; ``state`` is what every round's checkpoint holds."""

    grid: Grid | None
    cfg: DictConfig
    log: Log
    store: RunStore = field(init=False)
    held_out: list[str] = field(init=False)
    spec: StrategySpec = field(init=False)
    models: ModelSpec = field(init=False)
    run_key: str = field(init=False)
    timeout: float = field(init=False)
    freeze_norm_stats: float = field(init=False)
    state: dict = field(default_factory=dict)
    sites: Sites | None = None
    privacy: RunPrivacy = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.store = RunStore(cfg.run_dir)
        self.held_out = held_out_centers(cfg)
        self.spec = StrategySpec.from_config(OmegaConf.to_container(cfg.strategy, resolve=True))
        self.privacy = RunPrivacy(OmegaConf.to_container(cfg.privacy, resolve=True), self.spec)  # refuses what DP cannot protect
        check_local_dp(cfg)
        self.models = model_spec(cfg)
        # local DP releases coarse histograms (configs/privacy/local.yaml): the noise per bin does not shrink with bins
        self.histogram_bins = int(cfg.privacy.local.evaluation.bins if local_dp(cfg) else cfg.histogram_bins)
        self.timeout = float(cfg.participation.round_timeout_s)
        self.run_key = run_key(cfg.run_dir, int(cfg.seed))
        self.freeze_norm_stats = float(cfg.local.get("freeze_norm_stats") or 0.0)
        if not 0.0 <= self.freeze_norm_stats < 1.0:
            raise ValueError("local.freeze_norm_stats must be a fraction of each phase's rounds in [0, 1), "
                             f"got {self.freeze_norm_stats}")
        for stage in ("stage_a", "stage_b"):
            teacher_lr = cfg.training[stage].get("teacher_lr")
            try:  # the sites build this StageConfig; refuse its bad values before any round
                StageConfig(teacher_lr=None if teacher_lr is None else float(teacher_lr))
            except ValueError as exc:
                raise ValueError(f"training.{stage}.teacher_lr: {exc}") from None

    def run_fields(self) -> dict:
        """The fields every request of this run carries (:class:`protocol.messages.RunFields`)."""
        tr = self.cfg.training
        return {"seed": int(self.cfg.seed), "run_key": self.run_key, "model_spec": self.models, "device": str(self.cfg.device),
                "fedbn": self.spec.fedbn, "img_size": int(tr.img_size), "preprocess_size": int(tr.preprocess_size),
                "eval_batch_size": int(tr.eval_batch_size), "bins": self.histogram_bins, "local_dp": local_dp(self.cfg)}

    def train_request(self, phase: str) -> TrainRequest:
        """The phase's train message; the strategy sets each round's number and learning rate."""
        if phase == "gan":
            steps = int(self.cfg.local.gan_steps)
            return GanTrain(**self.run_fields(), local_steps=steps, total_steps=steps * int(self.cfg.rounds.gan),
                            batch_size=int(self.cfg.gan.batch_size), lr=float(self.cfg.gan.lr))
        tr = self.cfg.training
        return ClassifierTrain(
            **self.run_fields(), phase=phase, local_epochs=int(self.cfg.local.epochs),
            phase_rounds=max(1, int(self.cfg.rounds[phase])), batch_size=int(tr.batch_size),
            max_steps_per_epoch=int(self.cfg.local.max_steps_per_epoch or 0), freeze_norm_stats=self.freeze_norm_stats,
            synthetic_per_real=float(tr.synthetic_per_real),
            class_weighted=bool(tr[phase].get("class_weighted", phase == "stage_b")),
            teacher_lr=float(tr[phase].get("teacher_lr") or 0.0),  # 0: the stage's lr
            generator_sha256=str(self.state.get("generator_sha256") or ""))


def to_numpy(record: ArrayRecord) -> Arrays:
    return {k: v.numpy() for k, v in record.items()}


def to_record(arrays: Arrays) -> ArrayRecord:
    """C-contiguous arrays with their shapes kept: ``np.ascontiguousarray`` turned 0-d buffers
    (``num_batches_tracked``) into shape (1,), which FedAdam/FedYogi's shape check rejected."""
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in arrays.items()})


def torch_state(module: torch.nn.Module) -> Arrays:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def rng_state() -> dict:
    """The process-global RNGs (Flower samples nodes with ``random``), saved with every round."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])


def fmt(value: float | None, digits: int = 3) -> str:
    return "  -  " if value is None or (isinstance(value, float) and value != value) else f"{value:.{digits}f}"
