"""What travels between the coordinator (``server/``) and the hospitals (``client/``).

Plain Python (no Flower, no torch: an import contract checks it). Every request is the config
record ``config`` of a Flower Message; its ``phase`` names the message:

| Flower type | ``phase`` | request class | other records | reply |
|---|---|---|---|---|
| query | ``info`` | :class:`InfoQuery` | - | :class:`SiteInfo` (records ``site``, ``metrics``) |
| train | ``gan`` | :class:`GanTrain` | ``arrays`` | ``arrays`` + :class:`TrainReply` |
| train | ``stage_a``, ``stage_b`` | :class:`ClassifierTrain` | ``arrays`` | ``arrays`` + :class:`TrainReply` |
| query | ``synthesize`` | :class:`Synthesize` | ``generator`` | :class:`SynthesizeReply` |
| evaluate | ``evaluate`` | :class:`Evaluate` | ``arrays`` | :class:`EvaluateReply` |
| query | ``norm-state`` | :class:`NormStateQuery` | - | ``arrays`` + :class:`NormStateReply` |
Under ``local_dp`` train and evaluate replies add the record ``privacy`` (:class:`PrivacyReport`).

``to_record()`` gives the flat dict a ``ConfigRecord`` / ``MetricRecord`` holds;
``from_record()`` reads one back and raises :class:`MessageError` naming the field that is
missing or of the wrong type. Keys a message does not define are ignored (Flower adds its own,
e.g. ``server-round``). A wire key is the field name with ``-`` for ``_`` unless the field says
otherwise; defaults live here and nowhere else.
"""

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

__all__ = ["MessageError", "ModelSpec", "LocalDp", "PrivacyReport", "Request", "RunFields", "InfoQuery", "TrainRequest", "GanTrain",
           "ClassifierTrain", "Synthesize", "Evaluate", "NormStateQuery", "SiteInfo", "TrainReply", "EvaluateReply", "SynthesizeReply",
           "NormStateReply", "parse_request", "wire", "wire_key", "wire_keys", "CONFIG_RECORD", "ARRAYS_RECORD", "METRICS_RECORD",
           "SITE_RECORD", "GENERATOR_RECORD", "PRIVACY_RECORD", "NUM_EXAMPLES", "UNIT_WEIGHT", "PROXIMAL_MU", "TRAIN_LOSS", "GAN_LOSS",
           "HISTOGRAM_KEYS", "CONFUSION_KEYS", "TRAIN_PHASES", "SPLITS"]

# Record names inside a Message's RecordDict (``config`` and ``arrays`` are Flower's strategy defaults).
CONFIG_RECORD, ARRAYS_RECORD, METRICS_RECORD, SITE_RECORD, GENERATOR_RECORD, PRIVACY_RECORD = "config", "arrays", "metrics", "site", "generator", "privacy"
NUM_EXAMPLES = "num-examples"  # Flower's default aggregation weight (``weighted_by_key``)
UNIT_WEIGHT = "unit-weight"  # the weight of uniform aggregation: every site 1
PROXIMAL_MU = "proximal-mu"  # written by Flower's FedProx into every train config
TRAIN_LOSS = "train-loss"  # a classifier round's last-epoch loss (``train-`` + the history's names)
GAN_LOSS = "g_total"  # a GAN round's generator loss
HISTOGRAM_KEYS = ("hist-neg", "hist-pos")
CONFUSION_KEYS = ("tp", "fp", "tn", "fn")
TRAIN_PHASES = ("gan", "stage_a", "stage_b")
SPLITS = ("train", "val", "test", "all")


class MessageError(ValueError):
    """A received message is missing a field or holds a value of the wrong type."""


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name.replace("_", "-"))


def _convert(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the field type ``kind``; MessageError names the field otherwise."""
    if isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind):
        return None if value is None else _convert(name, value, next(a for a in typing.get_args(kind) if a is not type(None)))
    if kind in (ModelSpec, LocalDp):  # dataclasses that travel as one JSON string
        try:
            return value if isinstance(value, kind) else kind.from_json(str(value))
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError(f"{name}: not a {'model spec' if kind is ModelSpec else 'local DP setting'} ({exc})") from None
    if kind is bool and isinstance(value, bool):
        return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str and isinstance(value, str):
        return value
    elif typing.get_origin(kind) is list and isinstance(value, list | tuple) and all(
            isinstance(v, int | float) and float(v).is_integer() for v in value):
        return [int(v) for v in value]
    elif typing.get_origin(kind) is dict and isinstance(value, Mapping):
        return dict(value)
    raise MessageError(f"{name}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__} {value!r:.60}")


class _Record:
    """Flat-dict conversion shared by every message (fields -> wire keys)."""

    def to_record(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("spread"):
                out.update(value)
            elif value is not None:
                out[_key(f)] = value.to_json() if isinstance(value, ModelSpec | LocalDp) else value
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        values, known = {}, set()
        for f in dataclasses.fields(cls):
            if f.metadata.get("spread"):
                continue
            key = _key(f)
            known.add(key)
            if key in record:
                values[f.name] = _convert(key, record[key], hints[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MessageError(f"{cls.__name__} without {key!r}")
        spread = [f for f in dataclasses.fields(cls) if f.metadata.get("spread")]
        if spread:  # the free-form part: every other numeric entry
            values[spread[0].name] = {k: _convert(k, v, float) for k, v in record.items() if k not in known}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"{cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class ModelSpec:
    """The models a run trains, as plain dicts for :mod:`ecs_models.build`: the student
    (``{"name", ...}``), the teacher (or None: no distillation) and the SG-CycleGAN."""

    student: dict
    teacher: dict | None
    gan: dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        return cls(student=dict(data["student"]), teacher=dict(data["teacher"]) if data["teacher"] else None, gan=dict(data["gan"]))


@dataclass(frozen=True)
class LocalDp:
    """Patient-level DP at every site as the server asks it: DP-SGD and noised evaluation histograms (client.privacy)."""

    target_epsilon: float  # the site's whole-run budget (GAN and classifier rounds, evaluation releases)
    delta: float  # 0: 1 / (10 x the site's patients)
    clipping_norm: float  # L2 bound of one patient's joint gradient (teacher + student + projectors)
    noise_multiplier: float  # 0: from target_epsilon, delta and the planned steps and releases
    planned_rounds: int  # classifier rounds (stage A + B) the budget must last
    accountant: str = "rdp"  # rdp | prv (Opacus)
    eval_noise_multiplier: float = 0.0  # z of an evaluation release (std z x eval_images_per_patient per bin); 0: derived
    eval_budget_share: float = 0.1  # ... so that the planned releases spend this share of target_epsilon
    eval_images_per_patient: int = 1  # images of one patient an evaluation counts at most: the release's sensitivity
    gan_steps: int = 0  # the SG-CycleGAN's DP-SGD steps the run plans (rounds x local steps; 0: no GAN rounds)
    gan_budget_share: float = 0.3  # ... whose noise is derived so that they spend this share of target_epsilon

    def __post_init__(self) -> None:
        shares = self.eval_budget_share + self.gan_budget_share * (self.gan_steps > 0)  # what DP-SGD's noise leaves room for
        if not (self.target_epsilon > 0 and 0 <= self.delta < 1 and self.clipping_norm > 0 and min(self.noise_multiplier,
                self.eval_noise_multiplier, self.gan_steps) >= 0 and self.planned_rounds >= 1 and self.accountant in ("rdp", "prv")
                and 0 < min(self.eval_budget_share, self.gan_budget_share) and shares < 1 and self.eval_images_per_patient >= 1):
            raise ValueError(f"bad local DP setting {self}")
    as_dict, to_json, from_json = ModelSpec.as_dict, ModelSpec.to_json, classmethod(lambda cls, text: cls(**json.loads(text)))


# -- requests --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Request(_Record):
    """A request; ``phase`` names its class (``PHASES``)."""

    PHASES: ClassVar[tuple[str, ...]] = ()
    phase: str

    def __post_init__(self) -> None:
        if self.phase not in self.PHASES:
            raise ValueError(f"phase {self.phase!r} is not one of {list(self.PHASES)}")


@dataclass(frozen=True, kw_only=True)
class InfoQuery(Request):
    """Which center are you, and how much data has it (reply :class:`SiteInfo`)."""

    PHASES: ClassVar[tuple[str, ...]] = ("info",)
    phase: str = "info"


@dataclass(frozen=True, kw_only=True)
class RunFields(Request):
    """What every request of a run carries: its seed, its key (the sites' local state), the
    models, the device, FedBN, image sizes (px) and the evaluation histograms' bins."""

    seed: int
    run_key: str
    model_spec: ModelSpec
    device: str = "cpu"
    fedbn: bool = False
    img_size: int  # classifier input, px
    preprocess_size: int  # cached preprocessed frame, px
    eval_batch_size: int = 64
    bins: int  # score-histogram bins of evaluation replies
    local_dp: LocalDp | None = None  # None: no local DP


@dataclass(frozen=True, kw_only=True)
class TrainRequest(RunFields):
    """A train message: the round (set per round by the strategy) and its learning rate."""

    PHASES: ClassVar[tuple[str, ...]] = TRAIN_PHASES
    batch_size: int
    lr: float = 0.0  # the round's peak learning rate
    phase_round: int = 0  # 1-based within the phase
    global_round: int = 0  # 1-based across phases
    proximal_mu: float = 0.0  # FedProx (Flower's key)


@dataclass(frozen=True, kw_only=True)
class GanTrain(TrainRequest):
    """SG-CycleGAN local steps; decay and DANN schedules follow the global step."""

    PHASES: ClassVar[tuple[str, ...]] = ("gan",)
    phase: str = "gan"
    local_steps: int
    total_steps: int  # of the whole GAN phase (local steps x rounds)


@dataclass(frozen=True, kw_only=True)
class ClassifierTrain(TrainRequest):
    """Stage A (real + synthetic) or B (real, class-weighted) of teacher -> LSNet distillation."""

    PHASES: ClassVar[tuple[str, ...]] = ("stage_a", "stage_b")
    local_epochs: int
    phase_rounds: int  # the warm-up + cosine schedule spans the phase's rounds
    max_steps_per_epoch: int = 0  # 0: whole epochs
    freeze_norm_stats: float = 0.0  # fraction of the phase after which batch-norm statistics freeze
    synthetic_per_real: float = 1.0
    class_weighted: bool
    teacher_lr: float = 0.0  # 0: the stage's learning rate
    generator_sha256: str = ""  # "": no synthetic images


@dataclass(frozen=True, kw_only=True)
class Synthesize(RunFields):
    """Turn the site's training MRI into synthetic US with the generator of this SHA-256."""

    PHASES: ClassVar[tuple[str, ...]] = ("synthesize",)
    phase: str = "synthesize"
    generator_sha256: str


@dataclass(frozen=True, kw_only=True)
class Evaluate(RunFields):
    """Confusion matrix at ``threshold`` and score histograms of one split."""

    PHASES: ClassVar[tuple[str, ...]] = ("evaluate",)
    phase: str = "evaluate"
    split: str
    threshold: float = 0.5
    global_round: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} is not one of {list(SPLITS)}")


@dataclass(frozen=True, kw_only=True)
class NormStateQuery(RunFields):
    """FedBN: the site's own normalization layers at the end of training."""

    PHASES: ClassVar[tuple[str, ...]] = ("norm-state",)
    phase: str = "norm-state"


_REQUESTS: tuple[type[Request], ...] = (InfoQuery, GanTrain, ClassifierTrain, Synthesize, Evaluate, NormStateQuery)


def parse_request(record: Mapping[str, Any]) -> Request:
    """The request held in a received ``config`` record (no ``phase``: an info query)."""
    phase = record.get("phase", "info")
    for cls in _REQUESTS:
        if phase in cls.PHASES:
            return cls.from_record(record)
    raise MessageError(f"unknown phase {phase!r}")


def wire(cls: type[_Record], **values: Any) -> dict[str, Any]:
    """Wire keys -> values for some fields of ``cls`` (a strategy setting a round's fields)."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise KeyError(f"{cls.__name__} has no field {unknown}")
    return {_key(by_name[name]): value for name, value in values.items()}


# -- replies ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SiteInfo(_Record):
    """Counts of a site's label file; the center's name travels in the ``site`` record.

    ``max_train_examples_<phase>`` bound the ``num-examples`` a train reply of that phase may claim.
    """

    center: str = field(default="", metadata={"key": "center"})
    n_us_train: int
    n_us_val: int
    n_us_test: int
    n_us_all: int
    n_mri_train: int
    positives_train: int
    max_train_examples_gan: int
    max_train_examples_stage_a: int = field(metadata={"key": "max-train-examples-stage_a"})
    max_train_examples_stage_b: int = field(metadata={"key": "max-train-examples-stage_b"})

    def max_train_examples(self, phase: str) -> int:
        return int(getattr(self, f"max_train_examples_{phase}"))

    def metrics(self) -> dict[str, float]:
        """The counts as a MetricRecord's content (the name goes in :meth:`site_record`)."""
        return {k: float(v) for k, v in self.to_record().items() if k != "center"}

    def site_record(self) -> dict[str, str]:
        return {"center": self.center}

    @classmethod
    def from_records(cls, site: Mapping[str, Any], metrics: Mapping[str, Any]) -> Self:
        return cls.from_record({**metrics, "center": site.get("center")})


@dataclass(frozen=True, kw_only=True)
class TrainReply(_Record):
    """A train reply's metrics: examples (the aggregation weight), timings (s) and the named
    losses of the round (``losses``: every other entry, e.g. ``train-loss``, ``g_total``)."""

    num_examples: float
    unit_weight: float = 1.0
    train_seconds: float = 0.0  # the local optimisation loop
    seconds: float | None = None  # the whole round at the site (classifier rounds)
    client_seconds: float | None = None  # the ClientApp's handler: arrays in to reply built
    synthetic_images: float | None = None  # classifier rounds
    losses: dict[str, float] = field(default_factory=dict, metadata={"spread": True})


@dataclass(frozen=True, kw_only=True)
class EvaluateReply(_Record):
    """Confusion matrix at the request's threshold and per-class score histograms (``bins`` each)."""

    tp: int
    fp: int
    tn: int
    fn: int
    hist_neg: list[int]
    hist_pos: list[int]
    num_examples: float
    unit_weight: float = 1.0
    local_norms: float = 0.0  # 1: evaluated with the site's own FedBN layers

    def confusion(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


@dataclass(frozen=True, kw_only=True)
class SynthesizeReply(_Record):
    num_examples: float
    synthetic_positives: float = 0.0


@dataclass(frozen=True, kw_only=True)
class NormStateReply(_Record):
    num_examples: float
    unit_weight: float = 1.0


@dataclass(frozen=True, kw_only=True)
class PrivacyReport(_Record):
    """A site's ledger entry (JSON, :mod:`server.privacy_ledger`); ``declined``: it refused the round (over budget)."""

    ledger: str
    declined: bool = False
    reason: str = ""

    def __post_init__(self) -> None:  # a ValueError (json's too) becomes a MessageError in from_record
        if not isinstance(json.loads(self.ledger), dict):
            raise ValueError(f"ledger: not a JSON object: {self.ledger:.60}")


def wire_key(cls: type[_Record], name: str) -> str:
    """The wire key of field ``name`` of ``cls``."""
    return next(iter(wire(cls, **{name: None})))


def wire_keys() -> set[str]:
    """Every key a message of this module puts on the wire (for the test that no other module spells one)."""
    keys = {CONFIG_RECORD, ARRAYS_RECORD, METRICS_RECORD, SITE_RECORD, GENERATOR_RECORD, PRIVACY_RECORD, NUM_EXAMPLES, UNIT_WEIGHT,
            PROXIMAL_MU, TRAIN_LOSS, GAN_LOSS, *HISTOGRAM_KEYS, *CONFUSION_KEYS}
    for cls in (*_REQUESTS, TrainRequest, SiteInfo, TrainReply, EvaluateReply, SynthesizeReply, NormStateReply, PrivacyReport):
        keys |= {_key(f) for f in dataclasses.fields(cls) if not f.metadata.get("spread")}
    return keys

