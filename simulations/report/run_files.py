"""What a run directory holds, read once for the report: its kind, configuration, versions,
metrics, rounds, privacy record and where its cohort and model are.

| kind | written by | recognised by |
|---|---|---|
| ``federated`` | ``ecs-simulate`` (one run) | ``rounds.jsonl`` or ``run_config.toml``, with ``metrics.json`` |
| ``centralized`` | ``ecs-train`` (one run) | ``metrics.json`` + ``config.yaml``, no rounds |
| ``comparison`` | ``ecs-simulate experiment=compare`` | ``compare.json`` + ``results.json`` |
| ``ablation`` | ``ecs-train`` with ``variants`` | ``results.json`` + ``table.md`` |
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ReportError", "RunFiles", "load_run"]


class ReportError(Exception):
    """A run directory the report cannot use (the message names the path and the problem)."""


@dataclass
class RunFiles:
    """One run directory, read. Missing optional files are None / empty."""

    dir: Path
    kind: str  # federated | centralized | comparison | ablation
    config: dict[str, Any] = field(default_factory=dict)  # resolved configuration
    versions: dict[str, Any] | None = None  # versions.json (federated runs)
    metrics: dict[str, Any] | None = None  # metrics.json
    rounds: list[dict] = field(default_factory=list)  # rounds.jsonl (federated)
    final: list[dict] = field(default_factory=list)  # final_evaluation.jsonl (federated)
    histograms: dict[str, Any] | None = None  # final_histograms.json (federated): {"bins", "centers"}
    privacy: dict[str, Any] | None = None  # privacy.json
    privacy_md: str | None = None  # privacy.md
    compare: dict[str, Any] | None = None  # compare.json
    results: Any = None  # results.json (comparison: list of rows; ablation: variant -> metrics per seed)
    table_md: str | None = None  # table.md
    cohort_dir: Path | None = None  # the run's cohort, when it still exists
    cohort: dict[str, Any] | None = None  # its cohort.json
    bundle_dir: Path | None = None  # model/ with operating_point.json

    @property
    def name(self) -> str:
        return self.dir.name


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON ({exc})") from None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise ReportError(f"{path}: a line is not JSON ({exc})") from None


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: cannot be read as YAML ({exc})") from None
    return data if isinstance(data, dict) else {}


def _kind(d: Path) -> str:
    has = {name for name in ("metrics.json", "rounds.jsonl", "run_config.toml", "config.yaml", "compare.json",
                             "results.json", "table.md") if (d / name).is_file()}
    if {"compare.json", "results.json"} <= has:
        return "comparison"
    if {"results.json", "table.md"} <= has:
        return "ablation"
    if "metrics.json" in has:
        return "federated" if has & {"rounds.jsonl", "run_config.toml"} else "centralized"
    if has & {"rounds.jsonl", "run_config.toml", "config.yaml"}:
        raise ReportError(f"{d}: the run did not finish (no metrics.json); a report needs a finished run")
    raise ReportError(f"{d} is not a run directory of ecs-train or ecs-simulate "
                      "(none of metrics.json, rounds.jsonl, results.json, compare.json)")


def _cohort_dir(d: Path, kind: str, config: dict) -> Path | None:
    candidates = []
    if (d / "run_config.toml").is_file():
        try:
            candidates.append(tomllib.loads((d / "run_config.toml").read_text()).get("cohort-dir", ""))
        except (OSError, tomllib.TOMLDecodeError):
            pass
    if kind == "comparison":
        candidates.append((_json(d / "compare.json") or {}).get("cohort_dir", ""))
    candidates.append(config.get("cohort_dir", ""))
    for arm_config in sorted(d.glob("*/seed*/config.yaml"))[:1]:  # an ablation: its .hydra config is unresolved
        candidates.append(_yaml(arm_config).get("cohort_dir", ""))
    for text in filter(None, candidates):
        path = Path(str(text))
        for found in (path, d / path):
            if (found / "cohort.json").is_file():
                return found.resolve()
    return None


def load_run(run_dir: str | Path) -> RunFiles:
    """Read ``run_dir`` (see the module docstring).

    Raises:
        ReportError: not a directory, not a run, an unfinished run, or an unreadable file.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise ReportError(f"{d}: no such directory")
    kind = _kind(d)
    config_path = next((p for p in (d / "config.yaml", d / ".hydra" / "config.yaml") if p.is_file()), None)
    config = _yaml(config_path) if config_path else {}
    run = RunFiles(dir=d.resolve(), kind=kind, config=config)
    run.versions = _json(d / "versions.json") if (d / "versions.json").is_file() else None
    run.metrics = _json(d / "metrics.json") if (d / "metrics.json").is_file() else None
    run.rounds, run.final = _jsonl(d / "rounds.jsonl"), _jsonl(d / "final_evaluation.jsonl")
    run.histograms = _json(d / "final_histograms.json") if (d / "final_histograms.json").is_file() else None
    run.privacy = _json(d / "privacy.json") if (d / "privacy.json").is_file() else None
    run.privacy_md = (d / "privacy.md").read_text() if (d / "privacy.md").is_file() else None
    run.compare = _json(d / "compare.json") if (d / "compare.json").is_file() else None
    run.results = _json(d / "results.json") if (d / "results.json").is_file() else None
    run.table_md = (d / "table.md").read_text() if (d / "table.md").is_file() else None
    run.cohort_dir = _cohort_dir(d, kind, config)
    run.cohort = _json(run.cohort_dir / "cohort.json") if run.cohort_dir else None
    run.bundle_dir = d / "model" if (d / "model" / "operating_point.json").is_file() else None
    return run
