"""The run's one privacy record: ``privacy.json`` and a readable ``privacy.md`` (issue 15, part 3).

Every run directory (federated and centralized, ``privacy=none`` too) gets both files::

    {"unit": "patient", "delta": d,
     "sites": {center: entry, ...},   # local DP-SGD at each hospital (latest entry per site)
     "central": entry | null}         # client-level DP of the server's aggregate

An *entry* is a JSON-able dict, written by whoever ran the mechanism with its own accountant
(Opacus at a site, Flower's ``RdpAccountant`` at the server)::

    {"accountant": "rdp" | "prv", "mechanism": str, "clipping_norm": float,
     "events": [{"kind": "poisson_gaussian", "sample_rate": q, "noise_multiplier": z, "count": T}
                | {"kind": "gaussian", "noise_multiplier": z, "count": n}, ...],
     "epsilon": float, "delta": float}

Extra keys (``protects``, ``noise_std``, ...) are kept and shown. :func:`epsilon_from_events`
recomputes an entry's epsilon from its events alone with Google's dp-accounting (RDP for an
``rdp`` entry, privacy-loss distributions for a ``prv`` one), so that a reader of the record does
not have to trust the code that wrote it; :meth:`PrivacyLedger.verify` does so for every entry.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ACCOUNTANTS", "EVENT_KINDS", "PrivacyLedger", "check_entry", "epsilon_from_events", "merge_events"]

ACCOUNTANTS = ("rdp", "prv")
EVENT_KINDS = ("poisson_gaussian", "gaussian")
_ENTRY_KEYS = ("accountant", "mechanism", "clipping_norm", "events", "epsilon", "delta")


def check_entry(entry: Mapping) -> None:
    """Raise ``ValueError`` unless ``entry`` has the agreed keys, accountant and event kinds."""
    missing = [k for k in _ENTRY_KEYS if k not in entry]
    if missing:
        raise ValueError(f"privacy entry lacks {missing}: {dict(entry)}")
    if entry["accountant"] not in ACCOUNTANTS:
        raise ValueError(f"privacy entry accountant must be one of {ACCOUNTANTS}, got {entry['accountant']!r}")
    for event in entry["events"]:
        kind = event.get("kind")
        if kind not in EVENT_KINDS:
            raise ValueError(f"privacy event kind must be one of {EVENT_KINDS}, got {event!r}")
        if float(event["noise_multiplier"]) <= 0 or int(event["count"]) < 1:
            raise ValueError(f"privacy event needs noise_multiplier > 0 and count >= 1: {event!r}")
        if kind == "poisson_gaussian" and not 0.0 < float(event["sample_rate"]) <= 1.0:
            raise ValueError(f"poisson_gaussian sample_rate must lie in (0, 1]: {event!r}")


def merge_events(events: Iterable[Mapping]) -> list[dict]:
    """Consecutive identical events (all fields but ``count``) merged into one with the summed count."""
    merged: list[dict] = []
    for event in events:
        event = dict(event)
        if merged and {k: v for k, v in merged[-1].items() if k != "count"} == {k: v for k, v in event.items() if k != "count"}:
            merged[-1]["count"] += int(event["count"])
        else:
            merged.append({**event, "count": int(event["count"])})
    return merged


def _dp_event(event: Mapping):  # noqa: ANN202 - a dp_accounting.dp_event.DpEvent
    from dp_accounting import dp_event

    gaussian = dp_event.GaussianDpEvent(float(event["noise_multiplier"]))
    if event["kind"] == "poisson_gaussian" and float(event["sample_rate"]) < 1.0:
        gaussian = dp_event.PoissonSampledDpEvent(float(event["sample_rate"]), gaussian)
    return dp_event.SelfComposedDpEvent(gaussian, int(event["count"]))


def epsilon_from_events(events: Iterable[Mapping], delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of the composition of ``events``, recomputed with dp-accounting.

    Args:
        events: ledger events (see the module docstring); no events gives 0.
        delta: the target delta, in (0, 1).
        accountant: ``"rdp"`` (Renyi DP, dp-accounting's default orders) or ``"prv"`` (a privacy
            loss distribution, dp-accounting's PLD accountant: the exact counterpart of Opacus's
            PRV accountant). Both under add-or-remove-one neighbouring, as Opacus and Flower use.
    Returns:
        epsilon (dimensionless); ``inf`` when the composition gives no finite bound.
    """
    from dp_accounting import pld, rdp

    events = list(events)
    check_entry({"accountant": accountant, "mechanism": "", "clipping_norm": 0.0, "events": events,
                 "epsilon": 0.0, "delta": delta})
    if not events:
        return 0.0
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    for event in events:
        acc.compose(_dp_event(event))
    return float(acc.get_epsilon(float(delta)))


@dataclass
class PrivacyLedger:
    """The run's record (see the module docstring); ``mode`` is the ``privacy`` config group."""

    delta: float | None  # None: no mechanism ran, so no delta
    mode: str = "none"  # none | local | central | both
    unit: str = "patient"
    sites: dict[str, dict] = field(default_factory=dict)  # center -> its latest entry
    central: dict | None = None  # the server's entry, None without central DP

    def update_site(self, center: str, entry: Mapping) -> None:
        """Keep ``entry`` (a site's whole ledger so far, not an increment) as ``center``'s latest."""
        check_entry(entry)
        self.sites[str(center)] = json.loads(json.dumps(dict(entry)))

    def set_central(self, entry: Mapping | None) -> None:
        """Replace the server's entry (its accountant's whole history so far)."""
        if entry is not None:
            check_entry(entry)
            entry = json.loads(json.dumps(dict(entry)))
        self.central = entry

    def entries(self) -> dict[str, dict]:
        """Every entry by name: ``site <center>`` and ``central``."""
        out = {f"site {c}": e for c, e in sorted(self.sites.items())}
        if self.central is not None:
            out["central"] = self.central
        return out

    def verify(self, rtol: float = 0.01) -> dict[str, tuple[float, float]]:
        """Recompute every entry's epsilon from its events; ``{name: (reported, recomputed)}``.

        Raises ``ValueError`` naming the entries whose reported epsilon differs by more than
        ``rtol`` (relative) from the recomputation."""
        out, bad = {}, []
        for name, entry in self.entries().items():
            again = epsilon_from_events(entry["events"], float(entry["delta"]), entry["accountant"])
            reported = float(entry["epsilon"])
            out[name] = (reported, again)
            if not (reported == again or abs(reported - again) <= rtol * abs(again)):
                bad.append(f"{name}: reported {reported:.6g}, recomputed {again:.6g}")
        if bad:
            raise ValueError("privacy ledger: epsilon not reproduced from its events: " + "; ".join(bad))
        return out

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """``privacy.json``'s content (also what the checkpoint holds)."""
        return {"unit": self.unit, "delta": self.delta, "sites": json.loads(json.dumps(self.sites)),
                "central": json.loads(json.dumps(self.central))}

    @classmethod
    def from_dict(cls, data: Mapping, mode: str = "none") -> PrivacyLedger:
        delta = data["delta"]
        ledger = cls(delta=None if delta is None else float(delta), mode=mode, unit=str(data["unit"]))
        for center, entry in dict(data.get("sites") or {}).items():
            ledger.update_site(center, entry)
        ledger.set_central(data.get("central"))
        return ledger

    def write(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Write ``privacy.json`` and ``privacy.md`` into ``run_dir`` (atomically each)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = run_dir / "privacy.json", run_dir / "privacy.md"
        for path, text in zip(paths, (json.dumps(self.to_dict(), indent=2) + "\n", self.markdown()), strict=True):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return paths

    def markdown(self) -> str:
        """The readable record: the guarantee of each mechanism, then what it does not cover."""
        lines = ["# Privacy record", "", f"- privacy mode: **{self.mode}**", f"- unit: {self.unit}",
                 f"- delta: {'none' if self.delta is None else f'{self.delta:.3g}'}", ""]
        if not self.sites and self.central is None:
            lines += ["**No differential privacy** in this run: no clipping, no noise, no accountant. What it "
                      "released (a federation: every round's models, updates and evaluation histograms; any run: "
                      "the final model) is not protected against membership inference or reconstruction.", ""]
        for name, entry in self.entries().items():
            lines += _entry_markdown(name, entry)
        lines += ["## Not covered by these figures", "",
                  "- Per-round training metrics (loss, example counts) and anything a mechanism above does not name.",
                  "- The per-round validation and final evaluation histograms, unless a site entry lists their release "
                  "(local DP does: its Gaussian events at the evaluation's noise multiplier).",
                  "- An epsilon bounds what any observer of the released outputs can learn about the unit; it says "
                  "nothing about data a hospital discloses by other means.", ""]
        return "\n".join(lines)


def _fmt_event(event: Mapping) -> str:
    if event["kind"] == "poisson_gaussian":
        return (f"{int(event['count'])} x Poisson-sampled Gaussian (q = {float(event['sample_rate']):.4g}, "
                f"z = {float(event['noise_multiplier']):.4g})")
    return f"{int(event['count'])} x Gaussian (z = {float(event['noise_multiplier']):.4g})"


def _entry_markdown(name: str, entry: Mapping) -> list[str]:
    eps = float(entry["epsilon"])
    lines = [f"## {name}", "", f"- mechanism: {entry['mechanism']}", f"- accountant: {entry['accountant']}",
             f"- clipping norm: {float(entry['clipping_norm']):.4g}",
             f"- epsilon: **{eps:.4g}** at delta {float(entry['delta']):.3g}" if math.isfinite(eps) else "- epsilon: inf"]
    for key, value in entry.items():
        if key not in (*_ENTRY_KEYS, "events"):
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines.append("- events: " + ("; ".join(_fmt_event(e) for e in entry["events"]) or "none yet"))
    return [*lines, ""]
