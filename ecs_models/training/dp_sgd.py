"""Patient-level DP-SGD (Opacus) for the classifier stages, and the one accountant that spans them.

The privacy unit is the **patient**: a patient's stills, cine frames, second views and the
synthetic images of their MRI count once. Opacus clips per *example* and has no grouping of its
own, so each step samples patients, not images (:class:`PatientSampler`): every patient of the
training set is included independently with probability ``q`` (Poisson sampling, as Opacus's
accountants assume) and contributes **one** of their images, drawn uniformly. A step's batch thus
holds at most one example per patient, Opacus's per-example clip is a per-patient clip, and
adding or removing one patient changes the summed clipped gradient by at most the clipping norm
C: exactly the Poisson-subsampled Gaussian mechanism Opacus accounts for, at the patient level.

:class:`DpSgd` enters :func:`ecs_models.training.distill.train_stage` by wrapping: Opacus's
``GradSampleModule`` hooks on the whole ``DistillationModel`` (teacher, student and projectors,
so that one clip bounds everything a site releases; grouped convolutions' per-example gradients
from :mod:`ecs_models.training.per_example_grads`) and its ``DPOptimizer`` around the stage's
Adam; the hooks are removed when the stage ends, so the model's state is sent as usual.

:class:`PrivacyAccount` keeps one Opacus accountant (RDP or PRV) over every DP step of a site
across rounds and phases; its state is plain data (saved at the site, restored on resume), and
:meth:`PrivacyAccount.entry` is the site's ledger entry (:mod:`server.privacy_ledger`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import Sampler

if TYPE_CHECKING:  # Opacus is imported where DP runs: it is a quarter of a site app's import time
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

__all__ = ["PatientSampler", "PrivacyAccount", "DpSgd", "steps_per_epoch", "collate_or_empty", "MECHANISM"]

MECHANISM = ("DP-SGD (Opacus), patient-level: Poisson-sampled patients, one image per sampled patient, "
             "one L2 clip over the teacher, student and projectors (a GAN round: over every SG-CycleGAN parameter, "
             "ecs_models.training.gan_dp); in a federation also every evaluation reply, "
             "its histograms noised by the Gaussian mechanism (the gaussian events of the evaluation's noise multiplier)")


class PatientSampler(Sampler[list[int]]):
    """Batches of dataset indices: per step each patient with probability ``sample_rate``, one
    image each (uniform among the patient's items). ``steps`` batches per pass; a batch may be empty.

    Args:
        patient_ids: the patient of every dataset item, in item order (length N).
        sample_rate: q, the inclusion probability of a patient per step, in (0, 1].
        steps: batches per iteration over the sampler.
        generator: the source of every draw (seeded by the caller: reruns repeat).
    """

    def __init__(self, patient_ids: Sequence[str], sample_rate: float, steps: int, generator: torch.Generator) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        groups: dict[str, list[int]] = {}
        for index, patient in enumerate(patient_ids):
            groups.setdefault(str(patient), []).append(index)
        self.groups = [groups[p] for p in sorted(groups)]  # a fixed order: draws do not depend on item order
        self.sample_rate, self.steps, self.generator = float(sample_rate), int(steps), generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            chosen = (torch.rand(len(self.groups), generator=self.generator) < self.sample_rate).nonzero().flatten()
            picks = torch.rand(len(chosen), generator=self.generator)  # one image per chosen patient
            yield [self.groups[i][int(u * len(self.groups[i]))] for i, u in zip(chosen.tolist(), picks.tolist(), strict=True)]


def collate_or_empty(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Default collation; an empty Poisson batch becomes ``(empty [0], empty int64 [0])``."""
    if not batch:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return torch.utils.data.default_collate(batch)


def steps_per_epoch(n_patients: int, batch_size: int, cap: int | None = None) -> tuple[float, int]:
    """``(q, steps)``: sampling rate ``batch_size / n_patients`` (at most 1) and the steps of one
    epoch, ``ceil(1 / q)`` (each patient seen once in expectation), at most ``cap``."""
    if n_patients < 1 or batch_size < 1:
        raise ValueError(f"need patients and a batch size, got {n_patients} patients, batch {batch_size}")
    q = min(1.0, batch_size / n_patients)
    steps = math.ceil(n_patients / min(batch_size, n_patients))
    return q, min(steps, cap) if cap else steps


class PrivacyAccount:
    """One Opacus accountant over every DP release of one site (or one centralized run).

    Args:
        accountant: ``"rdp"`` or ``"prv"`` (Opacus's accountants).
        delta: the delta of every epsilon reported.
        clipping_norm: C of the DP-SGD steps (for the ledger).
        noise_multiplier: z of the DP-SGD steps, fixed once for the whole run (0: not set yet).
    """

    def __init__(self, accountant: str, delta: float, clipping_norm: float, noise_multiplier: float = 0.0) -> None:
        self.name, self.delta, self.clipping_norm = accountant, float(delta), float(clipping_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.eval_noise_multiplier = 0.0  # z of the evaluation releases (client.privacy), fixed once (0: not yet)
        self.gan_noise_multiplier = 0.0  # z of the SG-CycleGAN's DP-SGD steps, fixed once (0: not yet)
        from opacus.accountants import create_accountant

        self.accountant = create_accountant(accountant)

    def epsilon(self, *extra: tuple[float, float, int]) -> float:
        """Epsilon at ``delta`` so far, or after ``extra`` releases ``(z, q, steps)`` each
        (``q = 1``: the plain Gaussian mechanism); the state is unchanged."""
        acc = self.accountant
        if extra:
            acc = copy.deepcopy(acc)
            acc.history.extend(tuple(e) for e in extra if e[2] > 0)
        if not acc.history:
            return 0.0
        return float(acc.get_epsilon(self.delta))

    def add(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Record ``steps`` releases (``sample_rate = 1``: the plain Gaussian mechanism)."""
        if steps <= 0:
            return
        history = self.accountant.history
        if history and history[-1][:2] == (float(noise_multiplier), float(sample_rate)):
            history[-1] = (*history[-1][:2], history[-1][2] + int(steps))
        else:
            history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    def events(self) -> list[dict]:
        """The ledger's events, consecutive equal ones merged."""
        out: list[dict] = []
        for z, q, count in self.accountant.history:
            event = ({"kind": "gaussian", "noise_multiplier": z} if q >= 1.0
                     else {"kind": "poisson_gaussian", "sample_rate": q, "noise_multiplier": z})
            if out and {k: v for k, v in out[-1].items() if k != "count"} == event:
                out[-1]["count"] += int(count)
            else:
                out.append({**event, "count": int(count)})
        return out

    def entry(self, mechanism: str = MECHANISM) -> dict:
        """The ledger entry (schema of :mod:`server.privacy_ledger`): JSON-able."""
        return {"accountant": self.name, "mechanism": mechanism, "clipping_norm": self.clipping_norm,
                "events": self.events(), "epsilon": self.epsilon(), "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "evaluation_noise_multiplier": self.eval_noise_multiplier,
                "gan_noise_multiplier": self.gan_noise_multiplier, "unit": "patient"}

    def derive_noise(self, target_epsilon: float, sample_rate: float, steps: int,
                     reserved: tuple[float, float, int] | None = None) -> float:
        """Fix z once: the smallest noise multiplier with which ``steps`` steps at ``sample_rate``
        stay within ``target_epsilon`` (Opacus's ``get_noise_multiplier``, this accountant), on top
        of what the account has spent (the GAN's steps) and with room left for the ``reserved``
        releases ``(z, q, count)`` (the evaluation's), composed by this accountant in a bisection
        of z (to 0.01 in epsilon, as Opacus's own search).

        Raises:
            ValueError: the spent and reserved releases alone spend the target.
        """
        if self.noise_multiplier > 0:
            return self.noise_multiplier
        releases = (reserved,) if reserved is not None and reserved[2] > 0 else ()
        if not releases and not self.accountant.history:
            from opacus.accountants.utils import get_noise_multiplier

            self.noise_multiplier = float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=self.delta,
                                                               sample_rate=sample_rate, steps=steps, accountant=self.name))
            return self.noise_multiplier
        alone = self.epsilon(*releases)
        if alone >= target_epsilon:
            parts = [f"the {r[2]} evaluation releases at noise multiplier {r[0]:g}" for r in releases]
            if self.accountant.history:
                parts.append(f"the releases so far (epsilon {self.epsilon():.2f}, the GAN's)")
            raise ValueError(f"{' and '.join(parts)} alone spend epsilon {alone:.2f} of the budget {target_epsilon:g}: "
                             "raise privacy.local.evaluation.noise_multiplier or leave it to budget_share"
                             + (", or lower privacy.local.gan.budget_share" if self.accountant.history else ""))
        self.noise_multiplier = self.smallest_noise(lambda z: ((z, sample_rate, steps), *releases), target_epsilon)
        return self.noise_multiplier

    def derive_gan_noise(self, target_epsilon: float, sample_rate: float, steps: int) -> float:
        """Fix the SG-CycleGAN steps' z once: the smallest with which ``steps`` steps at
        ``sample_rate`` alone stay within ``target_epsilon`` (their share; :meth:`smallest_noise`)."""
        if self.gan_noise_multiplier <= 0:
            plan = PrivacyAccount(self.name, self.delta, self.clipping_norm)
            self.gan_noise_multiplier = plan.smallest_noise(lambda z: ((z, sample_rate, steps),), target_epsilon)
        return self.gan_noise_multiplier

    def derive_release_noise(self, target_epsilon: float, count: int) -> float:
        """Fix the evaluation releases' z once: the smallest with which ``count`` Gaussian releases
        stay within ``target_epsilon`` (this accountant; :meth:`smallest_noise`)."""
        if self.eval_noise_multiplier <= 0:
            plan = PrivacyAccount(self.name, self.delta, self.clipping_norm)
            self.eval_noise_multiplier = plan.smallest_noise(lambda z: ((z, 1.0, count),), target_epsilon)
        return self.eval_noise_multiplier

    def smallest_noise(self, plan: Callable[[float], tuple], target_epsilon: float) -> float:
        """The smallest z whose releases ``plan(z)`` (``(z, q, steps)`` tuples) compose, on top of this
        account, to at most ``target_epsilon``: doubling, then bisection to 0.01 in epsilon (as
        Opacus's ``get_noise_multiplier``)."""
        low, high = 0.0, 10.0
        while self.epsilon(*plan(high)) > target_epsilon:
            low, high = high, 2 * high
        for _ in range(60):  # 60 halvings are below float resolution
            if self.epsilon(*plan(high)) >= target_epsilon - 0.01:
                break
            middle = (low + high) / 2
            if self.epsilon(*plan(middle)) > target_epsilon:
                low = middle
            else:
                high = middle
        return high

    def state_dict(self) -> dict:
        """Plain data (lists, floats, str): what a resumed run restores."""
        return {"accountant": self.name, "delta": self.delta, "clipping_norm": self.clipping_norm,
                "noise_multiplier": self.noise_multiplier, "eval_noise_multiplier": self.eval_noise_multiplier,
                "gan_noise_multiplier": self.gan_noise_multiplier, "history": [list(h) for h in self.accountant.history]}

    @classmethod
    def from_state_dict(cls, state: dict) -> PrivacyAccount:
        account = cls(str(state["accountant"]), float(state["delta"]), float(state["clipping_norm"]),
                      float(state["noise_multiplier"]))
        account.eval_noise_multiplier = float(state.get("eval_noise_multiplier", 0.0))  # absent before evaluation releases
        account.gan_noise_multiplier = float(state.get("gan_noise_multiplier", 0.0))  # absent before GAN rounds under DP
        account.accountant.history = [(float(z), float(q), int(n)) for z, q, n in state["history"]]
        return account


class DpSgd:
    """DP-SGD for one :func:`~ecs_models.training.distill.train_stage` call (see the module docstring).

    Args:
        account: the run's accountant; every optimizer step is recorded in it.
        sample_rate: q of the :class:`PatientSampler` feeding the stage.
        expected_batch_size: q x patients (Opacus divides the noisy sum by it).
        seed: seeds the noise (reruns and resumed runs repeat it; not a cryptographic generator).
        noise_multiplier: z of these steps; None: the account's (a GAN round passes its own).
    """

    def __init__(self, account: PrivacyAccount, *, sample_rate: float, expected_batch_size: float, seed: int,
                 noise_multiplier: float | None = None) -> None:
        self.noise_multiplier = float(account.noise_multiplier if noise_multiplier is None else noise_multiplier)
        if self.noise_multiplier <= 0:
            raise ValueError("the noise multiplier is not set (derive_noise or a configured value)")
        self.account, self.sample_rate = account, float(sample_rate)
        self.expected_batch_size, self.seed = max(1, round(expected_batch_size)), int(seed)
        self._module: GradSampleModule | None = None
        self._optimizer: DPOptimizer | None = None

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> DPOptimizer:
        """Per-example gradient hooks on ``model``'s submodules and a DPOptimizer around ``optimizer``.
        In-place activations are turned off (same values): Opacus's backward hooks forbid
        modifying a hooked layer's output in place."""
        from opacus.optimizers import DPOptimizer

        from ecs_models.training.per_example_grads import GroupedConvGradSampleModule

        for layer in model.modules():
            if getattr(layer, "inplace", None) is True:
                layer.inplace = False
        self._module = GroupedConvGradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        device = next(model.parameters()).device
        self._optimizer = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier,
                                      max_grad_norm=self.account.clipping_norm, expected_batch_size=self.expected_batch_size,
                                      loss_reduction="mean", generator=torch.Generator(device).manual_seed(self.seed))
        self._optimizer.attach_step_hook(lambda opt: self.account.add(opt.noise_multiplier, self.sample_rate, 1))
        return self._optimizer

    def fill_missing(self, batch_size: int) -> None:
        """Parameters this step gave no gradient (every one for an empty batch) get zero
        per-example gradients [B, *shape], so the step still clips, adds noise and is accounted."""
        assert self._optimizer is not None
        for param in self._optimizer.params:
            if getattr(param, "grad_sample", None) is None:
                param.grad_sample = torch.zeros(batch_size, *param.shape, dtype=param.dtype, device=param.device)

    def close(self) -> None:
        """Remove the hooks (the model is a plain module again)."""
        if self._module is not None:
            self._module.to_standard_module()
            self._module = None
