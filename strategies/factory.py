"""``strategy=<name>`` -> a configured Flower strategy (``flwr.serverapp.strategy``).

| name | Flower class | what we add |
|---|---|---|
| fedavg | FedAvg | |
| fedavgm | FedAvgM (server learning rate and momentum) | running statistics averaged, not stepped |
| fedprox | FedProx (sends ``proximal-mu``) | the client-side term (:mod:`strategies.fedprox`) |
| fedadam / fedyogi | FedAdam / FedYogi | running statistics averaged, not optimized |
| fedbn | FedAvg on non-norm arrays | norm layers stay at sites (:mod:`strategies.fedbn`) |
| fedmedian | FedMedian | |
| krum | Krum (``num_malicious_nodes``) | |

All are weighted by ``num-examples`` (training examples) unless ``weighting: uniform``, which
weights every site 1 (clients always send ``unit-weight``). Robust aggregators (median, Krum)
ignore weights. Everything here is configuration; the round loop is Flower's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, FedProx, FedYogi, Krum

from protocol.messages import NUM_EXAMPLES, UNIT_WEIGHT

__all__ = ["STRATEGIES", "StrategySpec", "build_strategy"]

STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedbn", "fedmedian", "krum")
WEIGHT_KEYS = {"examples": NUM_EXAMPLES, "uniform": UNIT_WEIGHT}


@dataclass(frozen=True)
class StrategySpec:
    """The strategy group of the config (``configs/strategy/<name>.yaml``)."""

    name: str = "fedavg"
    weighting: str = "examples"  # examples | uniform
    proximal_mu: float = 0.0  # fedprox
    eta: float = 1e-2  # fedadam / fedyogi: server learning rate
    eta_l: float = 1e-1  # client learning rate (reported by Flower only)
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    num_malicious_nodes: int = 0  # krum
    server_learning_rate: float = 1.0  # fedavgm
    server_momentum: float = 0.0  # fedavgm

    @classmethod
    def from_config(cls, cfg: Mapping) -> StrategySpec:
        spec = cls(**dict(cfg))
        if spec.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {spec.name!r}; choose one of {STRATEGIES}")
        if spec.weighting not in WEIGHT_KEYS:
            raise ValueError(f"weighting must be one of {sorted(WEIGHT_KEYS)}, got {spec.weighting!r}")
        return spec

    @property
    def fedbn(self) -> bool:
        return self.name == "fedbn"


def build_strategy(spec: StrategySpec, *, fraction_train: float, min_train_nodes: int,
                   min_available_nodes: int) -> FedAvg:
    """A Flower strategy for one phase (a fresh one per phase: server-optimizer state is per model).

    ``min_available_nodes`` counts the phase's own nodes (the wrapper shows the strategy only
    those); per-round evaluation always asks every validating site.
    """
    common = dict(
        fraction_train=fraction_train, fraction_evaluate=1.0, min_train_nodes=min_train_nodes,
        min_evaluate_nodes=0, min_available_nodes=min_available_nodes,
        weighted_by_key=WEIGHT_KEYS[spec.weighting],
    )
    if spec.name in ("fedavg", "fedbn"):
        return FedAvg(**common)
    if spec.name == "fedavgm":
        return FedAvgM(**common, server_learning_rate=spec.server_learning_rate, server_momentum=spec.server_momentum)
    if spec.name == "fedprox":
        return FedProx(**common, proximal_mu=spec.proximal_mu)
    if spec.name in ("fedadam", "fedyogi"):
        cls = FedAdam if spec.name == "fedadam" else FedYogi
        return cls(**common, eta=spec.eta, eta_l=spec.eta_l, beta_1=spec.beta_1, beta_2=spec.beta_2, tau=spec.tau)
    if spec.name == "fedmedian":
        return FedMedian(**common)
    return Krum(**common, num_malicious_nodes=spec.num_malicious_nodes)
