"""The privacy record of a centralized run (``ecs-train``): every run directory gets
``privacy.json`` and ``privacy.md`` (:class:`server.privacy_ledger.PrivacyLedger`), ``privacy=none``
included, where the record says that no mechanism ran.

A centralized run has one training party, the pooled data (entry ``pooled`` under ``sites``);
``privacy=central`` and ``both`` are client-level DP of a federation's aggregate and are refused
here: there are no hospitals' updates to clip and noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from server.privacy_ledger import PrivacyLedger

__all__ = ["POOLED", "write_privacy_record"]

POOLED = "pooled"  # the ledger's name of a centralized run's one training party


def write_privacy_record(cfg: DictConfig, run_dir: Path, entry: Mapping | None = None) -> PrivacyLedger:
    """Write ``run_dir/privacy.json`` + ``privacy.md`` for ``cfg.privacy``; ``entry``: the pooled
    training's ledger entry (``privacy=local``, once training has accounted it)."""
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True) if "privacy" in cfg else {"mode": "none"}
    mode = str(privacy.get("mode", "none"))
    if mode in ("central", "both"):
        raise ValueError(f"privacy={mode} is client-level DP of the server's aggregate of hospitals' updates; a centralized "
                         "run (ecs-train) has none: use privacy=local (patient-level DP-SGD) or privacy=none")
    delta = privacy.get("delta")
    ledger = PrivacyLedger(delta=None if delta is None else float(delta), mode=mode)
    if entry is not None:
        ledger.update_site(POOLED, entry)
    ledger.write(run_dir)
    return ledger
