"""The run directory of a federated run: what is persisted, when, and how it is resumed.

```
<run_dir>/
  config.yaml           resolved configuration (written once, checked on resume)
  versions.json         python, torch, flwr, numpy, platform; generator artifact + SHA-256
  checkpoint.pt         after every round (atomic): phase, round, global arrays of the GAN and
                        of the classifier, strategy state (server optimizer moments), the
                        checkpoint selector and the selected round's arrays, RNG states
  rounds.jsonl          one JSON line per round: phase, sites sampled, train_centers (the
                        centers a train message was actually sent to, recorded at the Grid),
                        sites answered / failed / rejected (with reasons; evaluation replies as
                        "<center> (evaluate)"), time, per-center train and validation metrics
  final_arrays.npz      the classifier's global arrays after the last round
  final_evaluation.jsonl one line per center (role train: internal test split; held_out: all)
  final_histograms.json the final evaluation's per-class score histograms per center (non-zero bins)
  metrics.json          summary: threshold, pooled internal-test and held-out metrics, timings
  model/lsnet.onnx, model/operating_point.json   the exported student
```

A run stopped at any point restarts from its last completed round: everything after it is
recomputed (rounds are deterministic given the seed), and ``rounds.jsonl`` lines of rounds
beyond the checkpoint (a round that finished writing its line but not its checkpoint cannot
happen: the checkpoint is written first) are never duplicated.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["RunStore", "versions"]

# keys a resumed run may change: how it is launched, not what it trains
_NOT_COMPARED = ("resume", "debug", "federation", "run_id", "expected_sites", "seeds", "compare")


def versions() -> dict[str, str]:
    """Versions that decide whether two runs are comparable."""
    import flwr

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "flwr": flwr.__version__, "platform": platform.platform()}


def _atomic_write(path: Path, write) -> None:  # noqa: ANN001
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class RunStore:
    """Reads and writes one run directory (see the module docstring)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def start(self, cfg: DictConfig, *, resume: bool) -> None:
        """Write ``config.yaml`` + ``versions.json``; on resume, check the config is unchanged."""
        self.dir.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        comparable = {k: v for k, v in resolved.items() if k not in _NOT_COMPARED}
        config_file = self.dir / "config.yaml"
        if resume and config_file.is_file():
            before = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
            before = {k: v for k, v in before.items() if k not in _NOT_COMPARED}
            if before != comparable:
                changed = sorted(k for k in set(before) | set(comparable) if before.get(k) != comparable.get(k))
                raise ValueError(f"resume: the configuration differs from the stopped run's in {changed}")
            return
        if not resume and (self.dir / "rounds.jsonl").exists():
            raise FileExistsError(f"{self.dir} already holds a run; use resume=true or another run_dir")
        OmegaConf.save(OmegaConf.create(resolved), config_file)
        (self.dir / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n")

    def record(self, key: str, value: object) -> None:
        """Add ``key`` to versions.json (e.g. the generator artifact and its SHA-256)."""
        path = self.dir / "versions.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[key] = value
        path.write_text(json.dumps(data, indent=2) + "\n")

    def save_checkpoint(self, state: dict) -> None:
        _atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.is_file():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def append_round(self, line: dict) -> None:
        with (self.dir / "rounds.jsonl").open("a") as handle:
            handle.write(json.dumps(line, default=_json_default) + "\n")

    def truncate_rounds(self, last_global_round: int) -> None:
        """Drop ``rounds.jsonl`` lines after ``last_global_round`` (resume after a crash)."""
        path = self.dir / "rounds.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("global_round", 0) <= last_global_round]
        _atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def rounds(self) -> list[dict]:
        path = self.dir / "rounds.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)

        path = self.dir / name
        _atomic_write(path, write)
        return path

    def write_json(self, name: str, data: object) -> None:
        _atomic_write(self.dir / name, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n"))

    def write_jsonl(self, name: str, lines: list[dict]) -> None:
        _atomic_write(self.dir / name, lambda tmp: tmp.write_text("".join(json.dumps(x, default=_json_default) + "\n" for x in lines)))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
