"""A hospital's side of the federation in plain PyTorch: what one site does per message.

``client/app.py`` (the Flower ClientApp) only turns Messages into the arguments below and the
results back into records; everything here runs without flwr, on the site's own folder through
the DICOM data layer and the training code shared with centralized runs
(``ecs_models.training``). Nothing but model arrays and aggregate counts leaves a function.

Phases (the request's ``phase``, typed messages of :mod:`protocol.messages`):

* ``gan``: SG-CycleGAN local steps from the global GAN arrays on the site's training MRI + US.
  The learning-rate decay and the DANN schedule follow the *global* step
  ``(phase_round - 1) * local_steps``, so federated training stays on the centralized schedule;
  optimizer moments and the replay buffers start fresh every round (FedAvg-style).
  A site without MRI cannot train the GAN (the server never asks it to).
* ``synthesize`` (query, once before stage A): MRI of the site's training split -> synthetic
  ultrasound with the shared generator, kept on the site's disk (keyed by the generator's
  SHA-256) for stage A. A site without MRI keeps nothing and trains stage A on real US only.
* ``stage_a`` / ``stage_b``: ``train_stage`` (teacher + LSNet gradient distillation) for the
  round's local epochs; stage A on real + synthetic, stage B on real US with class weights.
  Within a round ``train_stage`` applies its warm-up + cosine schedule to the round's steps; the
  server sets each round's peak learning rate.
* Train replies report ``train-seconds`` (the local optimisation loop alone) next to
  ``seconds`` (the whole round at the site: model, data, training); ``benchmarks/bench_federated.py``
  compares them with the server's round time.
* ``evaluate``: scores of the requested split -> confusion matrix at the server's threshold and
  per-class score histograms (:mod:`ecs_models.training.binned_metrics`); never per-patient
  scores. Under local DP at most ``eval_images_per_patient`` images of a patient count, the
  histograms go out through the Gaussian mechanism and the confusion matrix is read off them
  (:mod:`ecs_models.training.private_histograms`, :mod:`client.privacy`).

FedProx adds its proximal term through gradient hooks (:mod:`strategies.fedprox`); FedBN keeps
normalization layers in a :class:`strategies.fedbn.LocalStateStore` on the site's disk.
Every random choice (init, data order, augmentation, replay buffer) is seeded from
``(seed, center, phase, global round)``, so a round replays identically after a restart.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from client import privacy
from client.cohort import cohort_centers
from client.data.labels import read_label_file
from client.data.preprocess import PreprocessConfig
from client.data.site_datasets import site_us_dataset
from ecs_models.build import build_classifier, build_gan, generator_keys, state_sha256
from ecs_models.training.binned_metrics import confusion_at, histogram_confusion, score_histograms
from ecs_models.training.data import (
    TransformedImages,
    cap_synthetic,
    combine,
    dataset_labels,
    make_loader,
    synthetic_dataset,
)
from ecs_models.training.distill import StageConfig, predict_scores, train_stage
from ecs_models.training.dp_sgd import DpSgd, PrivacyAccount
from ecs_models.training.private_histograms import first_images_per_patient
from ecs_models.training.runtime import resolve_device, seed_everything
from protocol.messages import (
    ClassifierTrain,
    Evaluate,
    EvaluateReply,
    GanTrain,
    NormStateQuery,
    NormStateReply,
    PrivacyReport,
    RunFields,
    SiteInfo,
    Synthesize,
    SynthesizeReply,
    TrainReply,
)
from strategies.fedbn import LocalStateStore, norm_keys, split_norm
from strategies.fedprox import proximal_term

__all__ = [
    "Site",
    "site_from_config",
    "round_seed",
    "site_info",
    "train_gan_round",
    "synthesize",
    "train_classifier_round",
    "evaluate_split",
    "local_norm_state",
    "privacy_report",
]

SPLITS = {"train": ["train"], "val": ["val"], "test": ["test"], "all": ["train", "val", "test", ""]}
State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Site:
    """One hospital: its name, its folder (DICOM + ``manifest.csv``) and a private cache."""

    center: str
    data_dir: Path
    cache_dir: Path | None

    @property
    def state_root(self) -> Path:
        return (self.cache_dir or self.data_dir / ".ecs-cache") / "fl-state"

    def store(self, run_key: str) -> LocalStateStore:
        return LocalStateStore(self.state_root, run_key, self.center)


def site_from_config(node_config: Mapping, run_config: Mapping) -> Site:
    """The site from a SuperNode's node config.

    Deployment: ``data-dir`` (the center folder), optional ``center`` (default: the folder's
    name) and ``cache-dir``. Simulation: ``partition-id`` indexes the centers (largest first) of the
    cohort at the run config's ``cohort-dir``; the cache is the run config's ``cache-dir``.
    """
    cache = node_config.get("cache-dir") or run_config.get("cache-dir") or None
    if node_config.get("data-dir"):
        data_dir = Path(str(node_config["data-dir"]))
        center = str(node_config.get("center") or data_dir.name)
    elif "partition-id" in node_config and run_config.get("cohort-dir"):
        cohort = Path(str(run_config["cohort-dir"]))
        names = cohort_centers(cohort)
        index = int(node_config["partition-id"])
        if not 0 <= index < len(names):
            raise ValueError(f"partition-id {index} but the cohort at {cohort} has {len(names)} centers")
        center, data_dir = names[index], cohort / names[index]
    else:
        raise ValueError("node config needs data-dir (deployment) or partition-id + run config cohort-dir (simulation)")
    if not (data_dir / "manifest.csv").is_file():
        raise FileNotFoundError(f"{data_dir}: no manifest.csv label file")
    return Site(center, data_dir, Path(str(cache)) if cache else None)


def round_seed(seed: int, center: str, phase: str, global_round: int) -> int:
    """A 63-bit seed per (run seed, center, phase, round): independent of node ids and order."""
    digest = hashlib.sha256(f"{seed}|{center}|{phase}|{global_round}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _load(model: torch.nn.Module, shared: Mapping[str, torch.Tensor], local: Mapping[str, torch.Tensor] | None = None) -> None:
    """Global arrays, then the site's own (FedBN) arrays over them; unknown keys raise."""
    state = model.state_dict()
    unknown = sorted(set(shared) - set(state))
    if unknown:
        raise KeyError(f"global arrays hold keys the model lacks: {unknown[:5]}")
    state.update({k: torch.as_tensor(v) for k, v in shared.items()})
    if local:
        state.update({k: torch.as_tensor(v) for k, v in local.items()})
    model.load_state_dict(state)


# -- data (cached per process: the DICOM layer already caches decoded pixels on disk) --------
_MEMO: dict[tuple, object] = {}


def _us(site: Site, split: str, size: int):
    key = ("us", str(site.data_dir), split, size)
    if key not in _MEMO:
        _MEMO[key] = site_us_dataset(site.data_dir, SPLITS[split], PreprocessConfig(output_size=size), site.cache_dir)
    return _MEMO[key]


def _gan_images(site: Site, modality: str, size: int):
    from client.data.gan_images import load_center_mri, load_center_us

    key = ("gan", str(site.data_dir), modality, size)
    if key not in _MEMO:
        loader = load_center_mri if modality == "MR" else load_center_us
        _MEMO[key] = loader(site.data_dir, image_size=size, cache_dir=site.cache_dir)
    return _MEMO[key]


def site_info(site: Site) -> SiteInfo:
    """Counts of the site's label file: US per split, training MRI, training positives, and the
    most training examples each phase can report (``max_train_examples_<phase>``).

    The maxima count one image per file, as the data layer reads them (middle frame of a
    cine); files that fail to decode only lower the real count. The server rejects a train
    reply whose ``num-examples`` exceeds its phase's maximum.
    """
    rows = read_label_file(site.data_dir / "manifest.csv")
    us = [r for r in rows if r.modality == "US"]
    n_us = {split: sum(1 for r in us if r.split in splits) for split, splits in SPLITS.items()}
    n_mri_train = sum(1 for r in rows if r.modality == "MR" and r.split in ("train", ""))
    gan_us = sum(1 for r in us if r.split in ("train", ""))  # the GAN's loaders also read rows without a split
    return SiteInfo(center=site.center, n_us_train=n_us["train"], n_us_val=n_us["val"], n_us_test=n_us["test"],
                    n_us_all=n_us["all"], n_mri_train=n_mri_train,
                    positives_train=sum(1 for r in us if r.split == "train" and r.label == 1),
                    max_train_examples_gan=n_mri_train + gan_us,
                    max_train_examples_stage_a=n_us["train"] + n_mri_train,  # at most one synthetic image per MRI
                    max_train_examples_stage_b=n_us["train"])


# -- phases ----------------------------------------------------------------------------------
def train_gan_round(site: Site, global_state: State, request: GanTrain) -> tuple[State, TrainReply]:
    """One round of SG-CycleGAN training; returns (new arrays, the reply's metrics)."""
    from ecs_models.training.gan import gan_trainer, train_gan

    seed = round_seed(request.seed, site.center, "gan", request.global_round)
    generator = seed_everything(seed)
    spec = request.model_spec.gan
    size, batch, steps = int(spec["image_size"]), request.batch_size, request.local_steps
    mri, us = _gan_images(site, "MR", size), _gan_images(site, "US", size)
    if len(mri) == 0 or len(us) == 0:
        raise ValueError(f"{site.center}: GAN training needs training MRI and US (has {len(mri)} MRI, {len(us)} US)")
    model = build_gan(spec)
    _load(model, global_state)
    started = time.perf_counter()
    if request.local_dp is not None:
        _train_gan_private(site, request, model, mri, us, seed)
        losses = {}  # functions of the site's images: not released under DP
    else:
        trainer = gan_trainer(model, total_steps=request.total_steps, lr=request.lr, seed=seed % 2**31,
                              device=resolve_device(request.device), start_step=(request.phase_round - 1) * steps)
        mri_loader = make_loader(mri.images, batch, shuffle=True, generator=generator)
        us_loader = make_loader(us.images, batch, shuffle=True, generator=generator)
        with proximal_term(model, request.proximal_mu):
            losses = train_gan(trainer, mri_loader, us_loader, steps=steps)
    reply = TrainReply(num_examples=float(len(mri) + len(us)), train_seconds=time.perf_counter() - started,
                       losses={k: float(v) for k, v in losses.items()})
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, reply


def _train_gan_private(site: Site, request: GanTrain, model: torch.nn.Module, mri, us, seed: int) -> None:  # noqa: ANN001
    """One GAN round under patient-level DP-SGD (:mod:`ecs_models.training.gan_dp`): Poisson-sampled
    patients of both modalities, as many per step in expectation as the non-private step has images
    (``batch_size`` of each), every parameter clipped jointly, the site's accountant. Raises
    ``BudgetExhausted`` when the round would exceed the budget."""
    from ecs_models.training.gan_dp import DpGanTrainer, train_gan_dp

    if request.proximal_mu > 0:
        raise ValueError("FedProx's proximal term acts on .grad, which DP-SGD replaces: not supported with local DP")
    images = torch.cat([mri.images, us.images])
    is_us = torch.cat([torch.zeros(len(mri), dtype=torch.bool), torch.ones(len(us), dtype=torch.bool)])
    patients = [*mri.patient_ids, *us.patient_ids]  # one person with both modalities is one unit
    account = privacy.load_account(site, request.run_key, request.local_dp)
    secret = privacy.secret_seed(site, request.run_key, seed)  # sampling and noise the server cannot predict
    loader, q, z = privacy.private_gan_round(account, request.local_dp, torch.utils.data.TensorDataset(images, is_us),
                                             patients, batch_size=2 * request.batch_size, steps=request.local_steps,
                                             generator=torch.Generator().manual_seed(secret))
    dp = DpSgd(account, sample_rate=q, expected_batch_size=q * len(set(patients)), seed=secret + 1, noise_multiplier=z)
    trainer = DpGanTrainer(model, dp, total_steps=request.total_steps, lr=request.lr,
                           start_step=(request.phase_round - 1) * request.local_steps, device=resolve_device(request.device))
    train_gan_dp(trainer, loader)
    privacy.save_account(site, request.run_key, account)


def synthesize(site: Site, generator_state: State, request: Synthesize) -> SynthesizeReply:
    """Synthetic US from the site's training MRI with the shared generator, kept on site."""
    from ecs_models.training.gan import synthesize_us

    sha = request.generator_sha256
    store = site.store(request.run_key)
    name = f"synthetic-{sha[:16]}"
    spec = request.model_spec.gan
    mri = _gan_images(site, "MR", int(spec["image_size"]))
    if not store.exists(name):
        if state_sha256(generator_state) != sha:
            raise ValueError(f"{site.center}: generator arrays do not match SHA-256 {sha}")
        model = build_gan(spec)
        missing = set(model.state_dict()) - set(generator_state)
        _load(model, generator_state)
        if set(generator_keys(sorted(missing))):
            raise KeyError(f"generator arrays miss {sorted(missing)[:5]}")
        images = synthesize_us(model, mri.images, batch_size=32) if len(mri) else mri.images
        store.save(name, {"images": images.cpu(), "labels": mri.labels.cpu()})
    return SynthesizeReply(num_examples=float(len(mri)), synthetic_positives=float(int(mri.labels.sum()) if len(mri) else 0))


def norm_stats_frozen(phase_round: int, phase_rounds: int, freeze_from: float) -> bool:
    """Whether round ``phase_round`` (1-based) of ``phase_rounds`` trains with frozen batch-norm
    statistics: from the fraction ``freeze_from`` of the phase on (0: never; 0.5: second half)."""
    if not 0.0 <= freeze_from < 1.0:
        raise ValueError(f"freeze_norm_stats must be in [0, 1), got {freeze_from}")
    return freeze_from > 0 and phase_round - 1 >= freeze_from * phase_rounds


def train_classifier_round(site: Site, global_state: State, request: ClassifierTrain) -> tuple[State, TrainReply]:
    """One round of stage A or B; returns (shared arrays, the reply's metrics)."""
    start = time.perf_counter()
    phase = request.phase
    seed = round_seed(request.seed, site.center, phase, request.global_round)
    generator = seed_everything(seed)
    model = build_classifier(request.model_spec)
    fedbn = request.fedbn
    keys = norm_keys(model) if fedbn else frozenset()
    store = site.store(request.run_key)
    _load(model, global_state, store.load("norm") if fedbn else None)
    real = _us(site, "train", request.preprocess_size)
    data, synthetic = real, None
    n_synthetic = 0
    sha = request.generator_sha256
    if phase == "stage_a" and sha and store.exists(f"synthetic-{sha[:16]}"):
        saved = store.load(f"synthetic-{sha[:16]}")
        synthetic = cap_synthetic(synthetic_dataset(saved["images"], saved["labels"].tolist()), len(real),
                                  request.synthetic_per_real, generator)
        n_synthetic = len(synthetic)
        data = combine([real, synthetic])
    if len(data) == 0:
        raise ValueError(f"{site.center}: no training images")
    phase_round, phase_rounds = max(1, request.phase_round), request.phase_rounds
    stage = StageConfig(epochs=request.local_epochs, lr=request.lr, class_weighted=request.class_weighted,
                        max_steps_per_epoch=request.max_steps_per_epoch or None, schedule_span=(phase_round - 1, phase_rounds),
                        frozen_norm_stats=norm_stats_frozen(phase_round, phase_rounds, request.freeze_norm_stats),
                        teacher_lr=request.teacher_lr or None)
    images = TransformedImages(data, request.img_size, train=True)
    loader, dp, account = make_loader(images, request.batch_size, shuffle=True, generator=generator), None, None
    if request.local_dp is not None:
        loader, dp, account = _private(site, request, images, real, synthetic, seed)
    device = resolve_device(request.device)
    train_start = time.perf_counter()
    with proximal_term(model, request.proximal_mu):
        history = train_stage(model, loader, stage, device=device, labels_for_weights=dataset_labels(real), log=lambda _m: None,
                              dp=dp)
    train_seconds = time.perf_counter() - train_start
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    shared, local = split_norm(state, keys)
    if fedbn:
        store.save("norm", local)
    if account is not None:
        privacy.save_account(site, request.run_key, account)
        history = []  # training losses of private data are not released under DP
    losses = {f"train-{k}": float(v) for k, v in (history[-1] if history else {}).items()}
    return shared, TrainReply(num_examples=float(len(data)), synthetic_images=float(n_synthetic), losses=losses,
                              seconds=time.perf_counter() - start, train_seconds=train_seconds)


def _private(site: Site, request: ClassifierTrain, images: TransformedImages, real, synthetic,  # noqa: ANN001
             seed: int) -> tuple[DataLoader, DpSgd, PrivacyAccount]:
    """DP-SGD of one round (:mod:`client.privacy`): the Poisson patient loader, the wrapper, the
    site's accountant. Raises ``BudgetExhausted`` when the round would exceed the budget."""
    if request.proximal_mu > 0:
        raise ValueError("FedProx's proximal term acts on .grad, which DP-SGD replaces: not supported with local DP")
    patients = list(real.patient_ids)
    if synthetic is not None:  # a synthetic image is an example of the patient whose MRI it came from
        mri = _gan_images(site, "MR", int(request.model_spec.gan["image_size"])).patient_ids
        patients += [mri[i] for i in getattr(synthetic, "indices", range(len(synthetic)))]
    account = privacy.load_account(site, request.run_key, request.local_dp)
    secret = privacy.secret_seed(site, request.run_key, seed)  # sampling and noise the server cannot predict
    loader, q, _steps = privacy.private_round(
        account, request.local_dp, images, patients, len(set(real.patient_ids)), batch_size=request.batch_size,
        epochs=request.local_epochs, max_steps=request.max_steps_per_epoch or None,
        generator=torch.Generator().manual_seed(secret))
    return loader, DpSgd(account, sample_rate=q, expected_batch_size=q * len(set(patients)), seed=secret + 1), account


def privacy_report(site: Site, request: RunFields) -> PrivacyReport | None:
    """The site's current ledger entry under local DP (None without)."""
    if request.local_dp is None:
        return None
    return privacy.report(privacy.load_account(site, request.run_key, request.local_dp))


def evaluate_split(site: Site, global_state: State, request: Evaluate) -> EvaluateReply:
    """Confusion matrix at the request's threshold and score histograms of one split of the site."""
    model = build_classifier(request.model_spec)
    local = site.store(request.run_key).load("norm") if request.fedbn else None
    _load(model, global_state, local)
    dataset = _us(site, request.split, request.preprocess_size)
    dp = request.local_dp
    if dp is not None:  # at most eval_images_per_patient images of a patient: the release's sensitivity
        dataset = Subset(dataset, first_images_per_patient(dataset.patient_ids, dp.eval_images_per_patient))
    loader = make_loader(TransformedImages(dataset, request.img_size, train=False), request.eval_batch_size, shuffle=False)
    labels, scores = predict_scores(model.student, loader, resolve_device(request.device))
    neg, pos = score_histograms(labels, scores, request.bins)
    if dp is None:
        confusion = confusion_at(labels, scores, request.threshold)
    else:  # the Gaussian mechanism; the rest is derived from its output (client.privacy)
        account = privacy.load_account(site, request.run_key, dp)
        seed = privacy.secret_seed(site, request.run_key, round_seed(request.seed, site.center, request.split, request.global_round))
        neg, pos = privacy.release_histograms(account, dp, neg, pos, np.random.default_rng(seed))
        privacy.save_account(site, request.run_key, account)
        confusion = histogram_confusion(neg, pos, request.threshold)
    return EvaluateReply(**confusion, hist_neg=neg.tolist(), hist_pos=pos.tolist(),
                         num_examples=float(neg.sum() + pos.sum()), local_norms=float(local is not None))


def local_norm_state(site: Site, request: NormStateQuery) -> tuple[State, NormStateReply]:
    """FedBN: the site's normalization state and its training-example count (end of training)."""
    local = site.store(request.run_key).load("norm")
    if local is None:
        raise FileNotFoundError(f"{site.center}: no local normalization state for run {request.run_key}")
    return dict(local), NormStateReply(num_examples=float(len(_us(site, "train", request.preprocess_size))))
