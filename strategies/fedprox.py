"""FedProx's client side: the proximal term ``mu / 2 * ||w - w_global||^2``.

Flower's ``FedProx`` strategy only sends ``proximal-mu`` in the train config; the client must add
the term. Our training loops (``ecs_models.training``) own their loss, so the term is added to
the gradient instead: a hook on every trainable parameter adds ``mu * (w - w_global)`` to its
gradient during backward — exactly the gradient of the term, before gradient clipping and the
optimizer step, as if it had been added to the loss. No training code changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["proximal_term"]


@contextmanager
def proximal_term(model: nn.Module, mu: float) -> Iterator[None]:
    """Within the block, gradients of ``model``'s trainable parameters include FedProx's term
    around their values at entry (the global model just loaded). ``mu <= 0`` does nothing.
    """
    if mu <= 0:
        yield
        return
    handles = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        anchor = param.detach().clone()

        def hook(grad: torch.Tensor, param: torch.Tensor = param, anchor: torch.Tensor = anchor) -> torch.Tensor:
            return grad + mu * (param.detach() - anchor.to(param.device))

        handles.append(param.register_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
