"""Client-level differential privacy at the server (``privacy=central``, issue 15 part 2), built
from Flower's own parts: ``DifferentialPrivacyServerSideFixedClipping`` around ``FedAvg``, with
Flower's ``RdpAccountant`` and ``PrivacyConfig(max_epsilon=...)``.

Each round the wrapper clips every hospital's whole update (global model -> its reply) to L2
norm ``C``, averages the clipped updates with equal weights and adds Gaussian noise of standard
deviation ``z x C / m`` (``m`` sites sampled) to the average: one Gaussian release of noise
multiplier ``z`` per round, composed by the accountant with no sampling amplification. Before a
release that would exceed ``max_epsilon`` the wrapper raises ``PrivacyBudgetExhausted``.

Why server-side clipping and not ``...ClientSideFixedClipping`` + ``fixedclipping_mod``: with
Flower's message API (no secure aggregation) the server sees each site's update either way, so
clipping at the sites protects nothing more from the server; at the server it cannot be skipped
by a site whose app is misconfigured, the sites need no change, and the reply validation of
:class:`strategies.wrapper.SiteAwareStrategy` still sees the raw updates (outliers are refused
before clipping hides them).

What the wrapper needs and :func:`check_central_dp` enforces (refused with the reason): FedAvg's
own ``aggregate_train`` inside (not FedAvgM/FedAdam/FedYogi/FedMedian/Krum; FedProx changes only
the sites' objective and keeps FedAvg's aggregation, so Flower accepts it and so do we); equal
weights (``weighting: uniform``); not FedBN (its normalization layers stay at the sites and are
averaged without noise for the final model). Exactly the sampled sites must reply: a round with
a failed or rejected site releases nothing (the wrapper skips it) and costs no budget.

:class:`CentralDp` is what :class:`~strategies.wrapper.SiteAwareStrategy` wraps: Flower's DP
wrapper, shown only the floating-point arrays. Integer counters (BatchNorm's
``num_batches_tracked``) would dominate a clipped update's norm and reveal how many steps a site
took; the sites receive them, but the global model keeps the values it sent. The noise is drawn
from a generator seeded from the operating system for each release (the run's seeded NumPy state
is restored afterwards), so it cannot be regenerated from the run's recorded seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid, PrivacyConfig, RdpAccountant
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy
from flwr.supercore.privacy_accounting import NeighboringRelation, SamplingMethod

from strategies.factory import StrategySpec, build_strategy

logger = logging.getLogger(__name__)

__all__ = ["CentralDp", "CentralDpSpec", "check_central_dp", "make_accountant", "num_sampled"]


@dataclass(frozen=True)
class CentralDpSpec:
    """``privacy.central`` of the config, with the record's ``privacy.delta``."""

    noise_multiplier: float  # z: noise std over the sensitivity C / m of the average
    clipping_norm: float  # C: L2 bound of one hospital's classifier update per round
    gan_clipping_norm: float  # C of one hospital's SG-CycleGAN update per round (GAN phase)
    max_epsilon: float | None  # the run stops before the release that would exceed it (None: no limit)
    delta: float

    @classmethod
    def from_config(cls, privacy: Mapping) -> CentralDpSpec:
        central = dict(privacy["central"])
        spec = cls(noise_multiplier=float(central.pop("noise_multiplier")), clipping_norm=float(central.pop("clipping_norm")),
                   gan_clipping_norm=float(central.pop("gan_clipping_norm")),
                   max_epsilon=None if central.get("max_epsilon") is None else float(central.pop("max_epsilon")),
                   delta=float(privacy["delta"]))
        central.pop("max_epsilon", None)
        if central:
            raise ValueError(f"privacy.central: unknown keys {sorted(central)}")
        if spec.noise_multiplier <= 0 or spec.clipping_norm <= 0 or spec.gan_clipping_norm <= 0:
            raise ValueError("privacy.central: noise_multiplier and the clipping norms must be positive")
        if not 0 < spec.delta < 1:
            raise ValueError(f"privacy.delta must lie in (0, 1), got {spec.delta}")
        return spec

    def clipping_norm_for(self, phase: str) -> float:
        return self.gan_clipping_norm if phase == "gan" else self.clipping_norm


def check_central_dp(spec: StrategySpec) -> None:
    """Refuse a strategy Flower's accounted DP wrapper cannot protect (see the module docstring)."""
    inner = build_strategy(spec, fraction_train=1.0, min_train_nodes=1, min_available_nodes=1)
    if spec.fedbn:
        raise ValueError("privacy=central cannot use strategy=fedbn: its normalization layers stay at the sites and are "
                         "averaged without noise for the final model; use strategy=fedavg")
    if not isinstance(inner, FedAvg) or type(inner).aggregate_train is not FedAvg.aggregate_train:
        raise ValueError(f"privacy=central needs FedAvg's own aggregation inside Flower's DP wrapper; strategy={spec.name} "
                         f"({type(inner).__name__}) aggregates differently, so the noise would not match its sensitivity. "
                         "Use strategy=fedavg (or fedprox)")
    if spec.weighting != "uniform":
        raise ValueError(f"privacy=central needs equal weights (strategy.weighting=uniform), got weighting={spec.weighting}: "
                         "weighting by examples lets a hospital's share, and so the sensitivity, depend on its size")


def num_sampled(nodes: int, fraction_train: float, min_train_nodes: int) -> int:
    """Sites FedAvg samples per round from ``nodes``: ``max(int(nodes x fraction), min_train_nodes)``."""
    return min(nodes, max(int(nodes * fraction_train), min(int(min_train_nodes), nodes)))


def make_accountant(spec: CentralDpSpec, population: int) -> RdpAccountant:
    """Flower's RDP accountant over ``population`` training hospitals, add/remove one, no amplification."""
    return RdpAccountant(PrivacyConfig(target_delta=spec.delta, population_size=int(population),
                                       neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                       sampling_method=SamplingMethod.NO_AMPLIFICATION, max_epsilon=spec.max_epsilon))


class CentralDp(Strategy):
    """Flower's ``DifferentialPrivacyServerSideFixedClipping`` over floating-point arrays only.

    Args:
        dp: the configured Flower wrapper (FedAvg inside, with its accountant).
    """

    def __init__(self, dp: DifferentialPrivacyServerSideFixedClipping) -> None:
        # SiteAwareStrategy checkpoints an inner strategy's non-callable attributes. This adapter
        # keeps nothing across rounds (the accountant is the run's, saved with the privacy
        # record), so Flower's wrapper, whose accountant holds modules, sits behind a callable.
        self.wrapped = lambda: dp
        self.weighted_by_key = dp.strategy.weighted_by_key
        self._counters: dict = {}
        self._keys: list[str] = []
        self._float_keys: list[str] = []
        self._sent: dict[str, np.ndarray] = {}  # the floats of the last train message, to spot a zero update

    @property
    def dp(self) -> DifferentialPrivacyServerSideFixedClipping:
        return self.wrapped()

    def summary(self) -> None:
        self.dp.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._keys = list(arrays.keys())
        self._counters = {k: a for k, a in arrays.items() if a.numpy().dtype.kind != "f"}
        self._float_keys = [k for k in self._keys if k not in self._counters]
        floats = ArrayRecord({k: arrays[k] for k in self._float_keys})
        self._sent = {k: floats[k].numpy() for k in self._float_keys}
        messages = list(self.dp.configure_train(server_round, floats, config, grid))
        for message in messages:  # the sites receive the whole model, counters included
            message.content[self.dp.strategy.arrayrecord_key] = arrays
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:  # Flower clips positionally: the floats in the order they were sent
            for name, record in list(reply.content.array_records.items()):
                reply.content[name] = ArrayRecord({k: record[k] for k in self._float_keys})
        for reply in replies:  # Flower's clip divides by the update's norm: a zero update would crash the run
            record = next(iter(reply.content.array_records.values()))
            if all(np.array_equal(record[k].numpy(), sent) for k, sent in self._sent.items()):
                logger.warning("round %d: node %s sent back the global model unchanged (a zero update, which Flower's "
                               "fixed clipping cannot scale): nothing is released this round", server_round,
                               reply.metadata.src_node_id)
                return None, None
        saved = np.random.get_state()  # noqa: NPY002 - Flower draws the noise from NumPy's global generator
        np.random.set_state(np.random.RandomState(np.random.MT19937(np.random.SeedSequence())).get_state())  # noqa: NPY002
        try:
            arrays, metrics = self.dp.aggregate_train(server_round, replies)
        finally:
            np.random.set_state(saved)  # noqa: NPY002
        if arrays is None:
            return None, metrics
        return ArrayRecord({k: self._counters[k] if k in self._counters else arrays[k] for k in self._keys}), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.dp.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.dp.aggregate_evaluate(server_round, replies)
