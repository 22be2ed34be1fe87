"""FedBN (Li et al., ICLR 2021, arXiv 2102.07623): normalization layers stay at each site.

Every ``BatchNorm*`` and ``GroupNorm`` layer's affine parameters and running statistics
(``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``) are *local*:
a site never sends them, the server never averages them, and a site keeps its own between
rounds in a :class:`LocalStateStore` on its disk (so a restarted SuperNode or a resumed run
keeps them too). LayerNorm (inside transformer blocks) is shared as in FedAvg.

The server side is plain FedAvg on the remaining arrays (``strategy=fedbn`` builds Flower's
FedAvg and tells clients ``fedbn=true``). For held-out centers and the exported model, which
have no local normalization state of their own, the sites' norm states are averaged once at
the end, weighted by training examples (:func:`server.federation`): the same exposure as one
FedAvg round of those layers, documented in the run's metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["NORM_TYPES", "norm_keys", "split_norm", "LocalStateStore"]

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def norm_keys(model: nn.Module) -> frozenset[str]:
    """State-dict keys of ``model``'s BatchNorm / GroupNorm layers (params and buffers)."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            prefix = f"{name}." if name else ""
            keys.update(prefix + k for k in module.state_dict())
    return frozenset(keys)


def split_norm(state: dict[str, object], keys: frozenset[str]) -> tuple[dict[str, object], dict[str, object]]:
    """``(shared, local)``: ``state`` without and with the norm ``keys``."""
    shared = {k: v for k, v in state.items() if k not in keys}
    local = {k: v for k, v in state.items() if k in keys}
    return shared, local


class LocalStateStore:
    """A site's private per-run state on its own disk: ``<root>/<run_key>/<center>/<name>.pt``.

    Holds FedBN norm states and synthetic ultrasound; written atomically (tmp + rename).
    """

    def __init__(self, root: str | Path, run_key: str, center: str) -> None:
        self.dir = Path(root) / _safe(run_key) / _safe(center)

    def path(self, name: str) -> Path:
        return self.dir / f"{_safe(name)}.pt"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, name: str, obj: object) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        tmp = path.with_suffix(".tmp")
        torch.save(obj, tmp)
        tmp.replace(path)
        return path

    def load(self, name: str) -> object | None:
        path = self.path(name)
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)) or "_"
