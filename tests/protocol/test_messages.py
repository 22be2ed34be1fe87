"""The message protocol: every message survives its record, a bad one is refused naming the
field, and no other module spells a message key."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

from protocol.messages import (
    ClassifierTrain,
    Evaluate,
    EvaluateReply,
    GanTrain,
    InfoQuery,
    MessageError,
    ModelSpec,
    NormStateQuery,
    SiteInfo,
    Synthesize,
    TrainReply,
    TrainRequest,
    parse_request,
    wire,
    wire_keys,
)

REPO = Path(__file__).resolve().parents[2]
SPEC = ModelSpec(student={"name": "lsnet", "img_size": 64}, teacher=None, gan={"name": "sg_cyclegan", "preset": "tiny", "image_size": 32})
RUN = {"seed": 3, "run_key": "run-seed3", "model_spec": SPEC, "img_size": 64, "preprocess_size": 80, "bins": 100}
REQUESTS = [
    InfoQuery(),
    GanTrain(**RUN, batch_size=4, lr=2e-4, local_steps=5, total_steps=20),
    ClassifierTrain(**RUN, phase="stage_b", batch_size=8, local_epochs=1, phase_rounds=4, class_weighted=True, teacher_lr=1e-4),
    Synthesize(**RUN, generator_sha256="ab" * 32),
    Evaluate(**RUN, split="test", threshold=0.25),
    NormStateQuery(**RUN),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.phase)
def test_every_request_round_trips_through_its_record_and_ignores_flowers_own_keys(request_) -> None:
    record = {**request_.to_record(), "server-round": 7}  # Flower's FedAvg adds this one
    assert parse_request(record) == request_


def test_a_round_set_by_the_strategy_reaches_the_site() -> None:
    template = REQUESTS[2].to_record()
    received = parse_request({**template, **wire(TrainRequest, phase_round=2, global_round=9, lr=1e-3)})
    assert (received.phase_round, received.global_round, received.lr) == (2, 9, 1e-3)
    with pytest.raises(KeyError, match="no field"):
        wire(TrainRequest, phase_rnd=2)


def test_a_bad_message_is_refused_with_the_field_named() -> None:
    record = REQUESTS[2].to_record()
    with pytest.raises(MessageError, match="without 'batch-size'"):
        parse_request({k: v for k, v in record.items() if k != "batch-size"})
    with pytest.raises(MessageError, match="img-size: expected int"):
        parse_request({**record, "img-size": "64"})
    with pytest.raises(MessageError, match="class-weighted: expected bool"):
        parse_request({**record, "class-weighted": 1})
    with pytest.raises(MessageError, match="model-spec: not a model spec"):
        parse_request({**record, "model-spec": "{}"})
    with pytest.raises(MessageError, match="split 'validation'"):
        parse_request({**REQUESTS[4].to_record(), "split": "validation"})
    with pytest.raises(MessageError, match="unknown phase 'stage_c'"):
        parse_request({**record, "phase": "stage_c"})
    with pytest.raises(MessageError, match="hist-pos: expected list"):
        EvaluateReply.from_record({**EvaluateReply(tp=1, fp=0, tn=0, fn=0, hist_neg=[0, 0], hist_pos=[0, 1],
                                                   num_examples=1).to_record(), "hist-pos": 3})


def test_replies_round_trip_and_train_losses_travel_by_name() -> None:
    reply = TrainReply(num_examples=12, train_seconds=1.5, losses={"train-loss": 0.4, "g_total": 2.0})
    assert TrainReply.from_record(reply.to_record()) == reply
    info = SiteInfo(center="clinic", n_us_train=5, n_us_val=2, n_us_test=2, n_us_all=9, n_mri_train=0, positives_train=1,
                    max_train_examples_gan=5, max_train_examples_stage_a=5, max_train_examples_stage_b=5)
    assert SiteInfo.from_records(info.site_record(), info.metrics()) == info
    assert info.max_train_examples("stage_a") == 5


def _string_literals(path: Path) -> list[tuple[int, str]]:
    out = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.STRING and token.string[:1] in "\"'":
            try:
                out.append((token.start[0], eval(token.string)))  # noqa: S307 - a plain string literal
            except SyntaxError:
                continue
    return out


def test_no_module_but_the_protocol_spells_a_message_key() -> None:
    """Keys with a ``-`` or ``_`` are the protocol's own words; single words (``seed``, ``split``,
    ...) are too common to grep, and travel only as typed fields (no ``params[...]`` is left)."""
    distinctive = {k for k in wire_keys() if "-" in k or "_" in k}
    roots = ["server", "client", "strategies", "simulations", "benchmarks", "tests"]
    found = []
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            found += [f"{path.relative_to(REPO)}:{line}: {value!r}" for line, value in _string_literals(path) if value in distinctive]
    assert not found, "message keys spelled outside protocol/messages.py:\n" + "\n".join(found)
    for path in ("client/app.py", "client/task.py"):
        text = (REPO / path).read_text()
        assert "params[" not in text and "params.get(" not in text, path
