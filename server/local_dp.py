"""The coordinator's side of local DP (``privacy=local|both``): what it asks of the sites, what it
keeps of their answers, and who may still train.

The sites run patient-level DP-SGD and keep their own accountants (:mod:`client.privacy`); the
server only sends the setting (:class:`protocol.messages.LocalDp`) in every request, keeps each
site's latest ledger entry in the run's :class:`~server.privacy_ledger.PrivacyLedger` (persisted
with every round's checkpoint, written to ``privacy.json`` at the end), and stops asking a site
that declined a round for lack of budget (``exhausted`` in its entry). When fewer sites than
``participation.min_train_replies`` can still train, the remaining rounds are skipped and the
run ends with the model it has (:func:`server.phases.run_phase`).
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from protocol.messages import LocalDp
from server.config import gan_rounds
from server.privacy_ledger import PrivacyLedger
from strategies.wrapper import RoundReport

__all__ = ["local_dp", "check_local_dp", "record_round", "record_entries", "exhausted", "eligible", "evaluation_noise_std"]

EXHAUSTED = "exhausted"  # key added to a site's ledger entry when it declined a round


def local_dp(cfg: DictConfig) -> LocalDp | None:
    """The setting every request carries (None without local DP). The budget must last the GAN's
    rounds (their own share of it) and all classifier rounds (stage A + B) of the run."""
    if str(cfg.privacy.mode) not in ("local", "both"):
        return None
    loc = cfg.privacy.local
    gan_steps = gan_rounds(cfg) * int(cfg.local.gan_steps)
    return LocalDp(target_epsilon=float(loc.target_epsilon), delta=float(loc.delta or 0.0),
                   clipping_norm=float(loc.clipping_norm), noise_multiplier=float(loc.noise_multiplier or 0.0),
                   planned_rounds=max(1, int(cfg.rounds.stage_a) + int(cfg.rounds.stage_b)), accountant=str(loc.accountant),
                   eval_noise_multiplier=float(loc.evaluation.noise_multiplier or 0.0),
                   eval_budget_share=float(loc.evaluation.budget_share),
                   eval_images_per_patient=int(loc.evaluation.images_per_patient),
                   gan_steps=gan_steps, gan_budget_share=float(loc.gan.budget_share))


def evaluation_noise_std(cfg: DictConfig, ledger: PrivacyLedger, centers: list[str]) -> float:
    """Noise std per bin of the ``centers``' evaluation releases summed (0 without local DP): each
    site adds N(0, (z x images_per_patient)^2) per bin, z from its ledger entry (:mod:`client.privacy`)."""
    setting = local_dp(cfg)
    if setting is None:
        return 0.0
    z = [float(ledger.sites.get(c, {}).get("evaluation_noise_multiplier") or setting.eval_noise_multiplier) for c in centers]
    return float(setting.eval_images_per_patient * sum(v * v for v in z) ** 0.5)


def check_local_dp(cfg: DictConfig) -> None:
    """Refuse, before any site is contacted, a local-DP run whose releases DP-SGD would not cover."""
    if local_dp(cfg) is None:
        return
    if float(cfg.strategy.get("proximal_mu") or 0.0) > 0:
        raise ValueError("privacy=local: FedProx's proximal term acts on the gradient DP-SGD replaces; use strategy=fedavg")
    norms = {"model": cfg.model.get("norm"), "teacher": cfg.teacher.get("norm") if cfg.distillation else "group"}
    if any(norm not in (None, "group") for norm in norms.values()):
        raise ValueError(f"privacy=local needs GroupNorm models (BatchNorm mixes the examples of a batch): {norms}")


def record_round(ledger: PrivacyLedger, report: RoundReport, log: Callable[[str], None]) -> None:
    """Keep each site's latest ledger entry of the round; mark the sites that declined."""
    record_entries(ledger, report.privacy, report.declined, log)


def record_entries(ledger: PrivacyLedger, entries: dict[str, dict], declined: dict[str, str],
                   log: Callable[[str], None]) -> None:
    """Keep the sites' latest ledger ``entries`` (center -> entry); mark the ``declined`` ones."""
    for center, entry in sorted(entries.items()):
        entry = dict(entry)
        if center in declined:
            entry[EXHAUSTED] = declined[center]
        elif EXHAUSTED in ledger.sites.get(center, {}):
            entry[EXHAUSTED] = ledger.sites[center][EXHAUSTED]
        try:
            ledger.update_site(center, entry)
        except ValueError as exc:  # a malformed entry is logged, never kept
            log(f"[ecs] {center}: privacy entry not kept: {exc}")


def exhausted(ledger: PrivacyLedger) -> dict[str, str]:
    """Center -> why it no longer trains (it declined a round over its budget)."""
    return {c: str(e[EXHAUSTED]) for c, e in ledger.sites.items() if e.get(EXHAUSTED)}


def eligible(ledger: PrivacyLedger, centers: dict[int, str], nodes: list[int]) -> list[int]:
    """``nodes`` whose sites have not declined for lack of budget."""
    gone = exhausted(ledger)
    return [n for n in nodes if centers.get(n) not in gone]
