"""Gradient distillation of the wide MobileViT teacher into LSNet (paper stage 2), plain PyTorch.

One training step, as the reference describes (all weights 1):

    teacher CE + student CE
    + sum over MobileViT blocks of MSE(student g_hat, teacher attention-score gradient)
    + BYOL-style alignment 2 - 2 cos(predictor(proj_student), stopgrad(proj_teacher))

The distillation target of a block is d(teacher CE)/d(pre-softmax attention scores) of the
first attention layer of that teacher block, on the same batch. It is read off the teacher CE's
own backward pass (the maps retain their gradient), so one walk down the teacher's graph gives
both the teacher's parameter gradients and the targets, and frees that graph before the student
runs. Raw score gradients are O(1/(B N)) and would give a vanishing MSE, so each target map is
standardised per (sample, patch position, head) — a scale-free target; the release leaves the
scale open. The student's gradient generator learns only through this MSE (its top-k indices are
not differentiable), so any path that trains LSNet keeps the MSE on.

Stage A trains on real + synthetic ultrasound, stage B on real ultrasound at 1/10 of the learning
rate with class-weighted CE, ``w_c = N / (C * N_c)`` clamped to [0.1, 10]; distillation stays on.
Models without maps (timm baselines) or with ``distillation=False`` train on their CE alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecs_models.training.dp_sgd import DpSgd
from ecs_models.training.norm_stats import batch_norm_layers

__all__ = [
    "StageConfig",
    "stage_schedule",
    "DistillationModel",
    "class_weights",
    "distillation_backward",
    "optimizer_groups",
    "train_stage",
    "predict_scores",
]


@dataclass(frozen=True)
class StageConfig:
    """One training stage (A: real + synthetic, B: real only with class weights)."""

    epochs: int = 10
    lr: float = 5e-4  # Adam; stage B uses 1/10 of stage A's
    warmup_fraction: float = 0.1  # linear warm-up, then cosine decay to 0
    weight_decay: float = 0.0
    class_weighted: bool = False  # stage B: w_c = N / (C N_c), clamped
    class_weight_clamp: tuple[float, float] = (0.1, 10.0)
    grad_clip_norm: float = 5.0
    max_steps_per_epoch: int | None = None  # cap for quick runs
    # (i, n): this call trains the i-th of n equal parts of one warm-up + cosine schedule; a
    # federated site in round r of a phase of R rounds trains part (r - 1, R), so the global
    # model follows the schedule a centralized run follows over R epochs. (0, 1): all of it.
    schedule_span: tuple[int, int] = (0, 1)
    # train with the batch-norm layers' running statistics frozen (normalize with them, do not
    # update them); the affine weights still train. Federated sites do this late in a phase so
    # that they train as the global model predicts (docs/federated.md, finding 6).
    frozen_norm_stats: bool = False
    # Adam rate of the teacher and its projector when it differs from ``lr`` (None: ``lr``). The
    # 6.7 M-parameter teacher does not learn at the student's 1e-3 but does at 2e-4
    # (docs/ablation.md, measurement 2); the schedule scales both rates alike.
    teacher_lr: float | None = None

    def __post_init__(self) -> None:
        if self.teacher_lr is not None and not self.teacher_lr > 0:
            raise ValueError(f"teacher_lr must be a positive learning rate or None, got {self.teacher_lr}")


class _Projector(nn.Sequential):
    """Training-only MLP on pooled features (BYOL projector / predictor)."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 256) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_features))


class DistillationModel(nn.Module):
    """Teacher + student + training-only projectors, as one module (one state to checkpoint or
    to send to a federation server). ``teacher=None`` trains the student alone.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, projection_dim: int = 128) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            self.teacher_projector = _Projector(teacher.num_features, projection_dim)
            self.student_projector = _Projector(student.num_features, projection_dim)
            self.student_predictor = _Projector(projection_dim, projection_dim)

    @property
    def distills(self) -> bool:
        return self.teacher is not None


def class_weights(labels: Iterable[int], n_classes: int = 2, clamp: tuple[float, float] = (0.1, 10.0)) -> torch.Tensor:
    """``w_c = N / (C * N_c)`` clamped to ``clamp``; a class absent from ``labels`` gets the max."""
    counts = np.bincount(np.asarray(list(labels), dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), clamp[1])
    return torch.tensor(np.clip(weights, *clamp), dtype=torch.float32)


def _standardise(target: torch.Tensor) -> torch.Tensor:
    """Per-(sample, position, head) zero-mean unit-std map: [B, P, H, N, N] -> same."""
    mean = target.mean(dim=(-2, -1), keepdim=True)
    std = target.std(dim=(-2, -1), keepdim=True, correction=0)
    return (target - mean) / (std + 1e-12)


def _ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, per_example: bool) -> torch.Tensor:
    """Cross-entropy; ``per_example``: the batch mean of per-example weighted terms (PyTorch's
    weighted mean divides by the batch's summed weights, which couples the examples)."""
    if not per_example or weight is None:
        return F.cross_entropy(logits, labels, weight=weight)
    return (weight[labels] * F.cross_entropy(logits, labels, reduction="none")).mean()


def distillation_backward(
    model: DistillationModel, images: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
    *, per_example: bool = False,
) -> dict[str, float]:
    """Backpropagate one batch's total loss into the parameters' ``.grad`` (accumulating, as
    ``total.backward()`` would) and return the loss and its parts.

    Args:
        images: float [B, C, S, S]; labels: int64 [B]; weight: per-class CE weights [K] or None.
        per_example: make every term a batch mean of per-example terms that depend on that
            example alone (DP-SGD: a per-example gradient must not depend on the rest of the batch).

    Returns:
        {"loss", "ce_student", "ce_teacher", "distill", "align"} as floats (just "loss" and
        "ce_student" without a teacher).

    Raises:
        FloatingPointError: a non-finite loss (nothing is stepped; the caller zeroes the grads).
    """
    if not model.distills:
        ce = _ce(model.student(images), labels, weight, per_example)
        _check_finite(ce, ce_student=ce)
        ce.backward()
        return {"loss": ce.item(), "ce_student": ce.item()}
    t_out = model.teacher.forward_with_maps(images)
    ce_t = _ce(t_out.logits, labels, weight, per_example)
    _check_finite(ce_t, ce_teacher=ce_t)
    for score_map in t_out.maps:
        score_map.retain_grad()
    with torch.no_grad():  # the alignment's target side (stop-gradient)
        z_t = F.normalize(model.teacher_projector(t_out.features), dim=-1)
    ce_t.backward()  # teacher parameter gradients and, on the maps, the distillation targets
    scale = len(labels) if per_example else 1  # the mean's 1/B off each example's target
    targets = [_standardise(score_map.grad * scale) for score_map in t_out.maps]
    s_out = model.student.forward_with_maps(images)
    ce_s = _ce(s_out.logits, labels, weight, per_example)
    distill = sum(F.mse_loss(g_hat, target) for g_hat, target in zip(s_out.maps, targets, strict=True))
    z_s = F.normalize(model.student_predictor(model.student_projector(s_out.features)), dim=-1)
    align = (2 - 2 * (z_s * z_t).sum(dim=-1)).mean()
    student_loss = ce_s + distill + align  # no gradient of these reaches the teacher (targets detached)
    _check_finite(student_loss, ce_student=ce_s, distill=distill, align=align)
    student_loss.backward()
    parts = {"ce_student": ce_s.item(), "ce_teacher": ce_t.item(), "distill": distill.item(), "align": align.item()}
    return {"loss": sum(parts.values()), **parts}


def _check_finite(loss: torch.Tensor, **parts: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite loss: " + ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items()))


def _schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def stage_schedule(cfg: StageConfig, steps: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step of a call that makes ``steps`` steps: its part
    ``cfg.schedule_span`` of one warm-up (``warmup_fraction``) + cosine schedule over all parts."""
    part, parts = cfg.schedule_span
    if not 0 <= part < parts:
        raise ValueError(f"schedule_span {cfg.schedule_span}: need 0 <= i < n")
    span, offset = parts * steps, part * steps
    warmup = max(1, int(cfg.warmup_fraction * span))
    return lambda step: _schedule(offset + step, span, warmup)


def optimizer_groups(model: DistillationModel, cfg: StageConfig, *, gradient_only: bool = False) -> list[dict]:
    """Adam parameter groups: one at ``cfg.lr``, or, with ``cfg.teacher_lr`` and a teacher, the
    teacher and its projector at ``cfg.teacher_lr`` and everything else (student, its projector
    and predictor) at ``cfg.lr``. Trainable parameters only; ``gradient_only`` also leaves out the
    teacher's projector, which no loss reaches (the alignment's stop-gradient side; DP-SGD would
    only add noise to it)."""
    frozen = {id(p) for p in model.teacher_projector.parameters()} if gradient_only and model.distills else set()
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in frozen]
    if cfg.teacher_lr is None or not model.distills:
        return [{"params": trainable, "lr": cfg.lr}]
    teacher_ids = {id(p) for part in (model.teacher, model.teacher_projector) for p in part.parameters()}
    return [{"params": [p for p in trainable if id(p) not in teacher_ids], "lr": cfg.lr},
            {"params": [p for p in trainable if id(p) in teacher_ids], "lr": cfg.teacher_lr}]


def train_stage(
    model: DistillationModel,
    train_loader: torch.utils.data.DataLoader,
    cfg: StageConfig,
    *,
    device: torch.device,
    labels_for_weights: Iterable[int] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] = print,
    dp: DpSgd | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.epochs`` epochs; returns the mean loss parts per epoch.

    ``on_epoch_end(epoch, parts)`` runs after every epoch (validation and checkpointing live
    there, in the caller). Batches are ``(images [B, C, S, S], labels [B])``. With ``dp`` the
    stage runs DP-SGD (:mod:`ecs_models.training.dp_sgd`): the loader must yield Poisson batches
    of one image per patient (possibly empty), its clip replaces ``cfg.grad_clip_norm``.
    """
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(optimizer_groups(model, cfg, gradient_only=dp is not None), lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
    if dp is not None:
        optimizer = dp.wrap(model, optimizer)
    try:
        return _epochs(model, train_loader, cfg, optimizer, params, device, labels_for_weights, on_epoch_end, log, dp)
    finally:
        if dp is not None:
            dp.close()


def _epochs(model: DistillationModel, train_loader: Iterable, cfg: StageConfig, optimizer: torch.optim.Optimizer,
            params: list[nn.Parameter], device: torch.device, labels_for_weights: Iterable[int] | None,
            on_epoch_end: Callable[[int, dict[str, float]], None] | None, log: Callable[[str], None],
            dp: DpSgd | None) -> list[dict[str, float]]:
    """The epochs of :func:`train_stage`."""
    steps_per_epoch = len(train_loader) if cfg.max_steps_per_epoch is None else min(len(train_loader), cfg.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, stage_schedule(cfg, max(1, cfg.epochs * steps_per_epoch)))
    weight = None
    if cfg.class_weighted:
        if labels_for_weights is None:
            raise ValueError("class_weighted stage needs labels_for_weights")
        weight = class_weights(labels_for_weights, clamp=cfg.class_weight_clamp).to(device)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        if cfg.frozen_norm_stats:
            for layer in batch_norm_layers(model).values():
                layer.eval()
        sums: dict[str, float] = {}
        n_batches = 0
        for step, (images, labels) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            try:
                parts = distillation_backward(model, images, labels, weight, per_example=dp is not None) if len(labels) else {}
            except FloatingPointError as exc:
                raise FloatingPointError(f"epoch {epoch} step {step}: {exc}") from None
            if dp is None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
            else:
                dp.fill_missing(len(labels))  # an empty Poisson batch still clips (nothing), adds noise, is accounted
            optimizer.step()
            scheduler.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            n_batches += 1
        means = {k: v / max(n_batches, 1) for k, v in sums.items()}
        history.append(means)
        log(f"  epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in means.items()))
        if on_epoch_end is not None:
            on_epoch_end(epoch, means)
    return history


@torch.no_grad()
def predict_scores(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [N], P(invasion) [N])`` of a classifier over a loader, in eval mode."""
    model.to(device).eval()
    all_labels, all_scores = [], []
    for images, labels in loader:
        logits = model(images.to(device))
        all_scores.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
        all_labels.append(np.asarray(labels))
    if not all_labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return np.concatenate(all_labels).astype(np.int64), np.concatenate(all_scores).astype(np.float64)
