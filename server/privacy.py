"""The coordinator's side of ``privacy=none|local|central|both``: the run's
:class:`~server.privacy_ledger.PrivacyLedger`, and with central DP the one Flower accountant that
every phase's DP wrapper composes into (:mod:`strategies.central_dp`).

Lifecycle in a run: built with the run context (a strategy the DP wrapper cannot protect is
refused before any site is contacted); :meth:`RunPrivacy.start` once the training hospitals are
known (the accountant's population), restoring the checkpoint's ledger and accountant on resume;
:meth:`RunPrivacy.wrap` around each phase's strategy; :meth:`RunPrivacy.state_dict` into every
round's checkpoint; :meth:`RunPrivacy.write` -> ``privacy.json`` + ``privacy.md`` at the end, also
when the budget stopped the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flwr.serverapp import RdpAccountant
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from server.privacy_ledger import PrivacyLedger, epsilon_from_events, merge_events
from strategies.central_dp import CentralDp, CentralDpSpec, check_central_dp, make_accountant
from strategies.factory import StrategySpec

__all__ = ["MODES", "RunPrivacy"]

MODES = ("none", "local", "central", "both")
MECHANISM = ("client-level Gaussian mechanism: each hospital's update clipped to the clipping norm at the server, "
             "equal-weight FedAvg, Gaussian noise of std z x C / m on the average (Flower "
             "DifferentialPrivacyServerSideFixedClipping, no sampling amplification)")


class RunPrivacy:
    """The run's privacy mechanisms and record (see the module docstring).

    Args:
        privacy: the ``privacy`` config group (``mode``, ``delta``, ``central: {...}``).
        strategy: the run's strategy spec, checked against central DP's constraints.
    """

    def __init__(self, privacy: Mapping, strategy: StrategySpec) -> None:
        self.mode = str(privacy.get("mode", "none"))
        if self.mode not in MODES:
            raise ValueError(f"privacy.mode must be one of {MODES}, got {self.mode!r}")
        self.central: CentralDpSpec | None = None
        if self.mode in ("central", "both"):
            self.central = CentralDpSpec.from_config(privacy)
            check_central_dp(strategy)
        delta = privacy.get("delta")
        self.ledger = PrivacyLedger(delta=None if delta is None else float(delta), mode=self.mode)
        self.accountant: RdpAccountant | None = None
        self.noise_std: dict[str, float] = {}  # phase -> z x C / m of its releases
        self.stopped: str | None = None  # why the budget ended the run

    def start(self, population: int, saved: Mapping | None = None) -> None:
        """The accountant over ``population`` training hospitals; ``saved``: a checkpoint's :meth:`state_dict`."""
        if saved is not None:
            self.ledger = PrivacyLedger.from_dict(saved["ledger"], mode=self.mode)
            self.noise_std = dict(saved.get("noise_std") or {})
            self.stopped = saved.get("stopped")
        if self.central is not None:
            self.accountant = make_accountant(self.central, population)
            if saved is not None and saved.get("accountant") is not None:
                self.accountant.load_state_dict(saved["accountant"])
        self._refresh()

    def min_replies(self, sampled: int, configured: int) -> int:
        """k of a phase: with central DP every sampled site (Flower's wrapper releases nothing otherwise)."""
        return sampled if self.accountant is not None else configured

    def wrap(self, inner: FedAvg, phase: str, sampled: int) -> FedAvg | CentralDp:
        """``inner`` as is, or inside Flower's DP wrapper with the run's accountant (``sampled`` sites per round)."""
        if self.accountant is None or self.central is None:
            return inner
        clip = self.central.clipping_norm_for(phase)
        self.noise_std[phase] = self.central.noise_multiplier * clip / sampled
        dp = DifferentialPrivacyServerSideFixedClipping(inner, self.central.noise_multiplier, clip, sampled,
                                                        accountant=self.accountant)
        return CentralDp(dp)

    def budget_exhausted(self, reason: str) -> None:
        """Record that the accountant refused the next release (the run then ends cleanly)."""
        self.stopped = reason

    def central_entry(self) -> dict | None:
        """The ledger's server entry from the accountant's own history (None without central DP)."""
        if self.accountant is None or self.central is None:
            return None
        compositions = self.accountant.state_dict()["compositions"]
        events = merge_events({"kind": "gaussian", "noise_multiplier": c["event"]["noise_multiplier"], "count": c["count"]}
                              for c in compositions)
        spent = self.accountant.get_privacy_spent()
        # one patient more, fewer or different at a hospital that takes part moves its clipped
        # update anywhere in the ball of radius C: sensitivity 2C, i.e. these releases at z / 2
        patient = [{**e, "noise_multiplier": e["noise_multiplier"] / 2} for e in events]
        return {"accountant": "rdp", "mechanism": MECHANISM, "clipping_norm": self.central.clipping_norm,
                "events": events, "epsilon": spent.epsilon if events else 0.0, "delta": spent.delta,
                "protects": "one hospital's whole contribution (add or remove a hospital)",
                "epsilon_one_patient": epsilon_from_events(patient, spent.delta, "rdp"),
                "one_patient": "a patient added, removed or changed at a taking-part hospital: the same releases at z / 2",
                "gan_clipping_norm": self.central.gan_clipping_norm,
                "noise_std": {phase: round(std, 6) for phase, std in self.noise_std.items()},
                "hospitals": self.accountant.config.population_size, "releases": spent.num_releases,
                "max_epsilon": self.central.max_epsilon, "stopped": self.stopped}

    def _refresh(self) -> None:
        self.ledger.set_central(self.central_entry())

    def state_dict(self) -> dict:
        """What the checkpoint keeps: the ledger, Flower's accountant state, the phases' noise."""
        self._refresh()
        return {"ledger": self.ledger.to_dict(), "accountant": None if self.accountant is None else self.accountant.state_dict(),
                "noise_std": dict(self.noise_std), "stopped": self.stopped}

    def write(self, run_dir: str | Path) -> None:
        self._refresh()
        self.ledger.write(run_dir)

    def summary(self) -> dict:
        """For metrics.json: the mode, and the server's epsilon at delta where central DP ran."""
        entry = self.central_entry()
        return {"mode": self.mode, "delta": self.ledger.delta,
                "central_epsilon": None if entry is None else entry["epsilon"], "stopped": self.stopped}
