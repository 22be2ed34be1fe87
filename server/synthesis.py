"""Synthesis before stage A: the SG-CycleGAN's generator (trained in the GAN phase or loaded from
an artifact, file and SHA-256 recorded) goes to every training site with MRI, which turns its
own MRI into synthetic ultrasound locally and keeps it there."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, MessageType, RecordDict

from ecs_models.build import build_gan, generator_keys, state_sha256
from protocol.messages import (
    CONFIG_RECORD,
    GENERATOR_RECORD,
    METRICS_RECORD,
    Synthesize,
    SynthesizeReply,
)
from server.context import RunContext, to_record, torch_state
from server.sites import send

__all__ = ["generator", "synthesize"]


def generator(ctx: RunContext) -> dict[str, np.ndarray] | None:
    """The generator's arrays (the MRI -> US part of the GAN), or None without synthesis."""
    cfg = ctx.cfg
    if not cfg.synthesis:
        return None
    if cfg.gan_artifact:
        path = Path(str(cfg.gan_artifact))
        ctx.store.record("gan_artifact", {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        model = build_gan(ctx.models.gan)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"] if "model" in saved else saved)
        arrays = torch_state(model)
    else:
        arrays = ctx.state["gan_arrays"]
    return {k: arrays[k] for k in generator_keys(sorted(arrays))}


def synthesize(ctx: RunContext) -> None:
    """Send the generator to the training sites with MRI; each keeps its synthetic images."""
    arrays = generator(ctx)
    if arrays is None:
        return
    sha = state_sha256(arrays)
    ctx.state["generator_sha256"] = sha
    ctx.store.record("generator_sha256", sha)
    assert ctx.sites is not None
    request = Synthesize(**ctx.run_fields(), generator_sha256=sha)
    content = RecordDict({GENERATOR_RECORD: to_record(arrays), CONFIG_RECORD: ConfigRecord(request.to_record())})
    made = {}
    for reply in send(ctx.grid, ctx.sites.with_mri(), MessageType.QUERY, lambda _n: content, ctx.timeout):
        center = ctx.sites.centers.get(reply.metadata.src_node_id, "?")
        if reply.has_error():
            ctx.log(f"[ecs] synthesis failed at {center}: {reply.error.reason} (it trains stage A on real US only)")
        else:
            made[center] = int(SynthesizeReply.from_record(reply.content[METRICS_RECORD]).num_examples)
    ctx.log(f"[ecs] synthesis with generator {sha[:12]}: {made} synthetic images per site")
