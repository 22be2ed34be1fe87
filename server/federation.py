"""The coordinator's run: phases, persistence, resume, final evaluation and export.

Order of a run (each phase is one ``Strategy.start`` of Flower's strategy, wrapped by
:class:`strategies.wrapper.SiteAwareStrategy`; no round loop of our own):

0. **Sites.** A ``query``/``info`` message to every connected node answers which center it is
   (and its counts); centers named in ``held_out_centers`` (required, :func:`server.config.held_out_centers`)
   are held out: they receive only ``query`` and ``evaluate`` messages, never ``train``. A
   held-out name that matches no connected center stops the run before any training, since
   that center would otherwise train under its real name.
1. **SG-CycleGAN** (``rounds.gan`` rounds on the training sites that have MRI), or a generator
   artifact (``gan_artifact``: file and SHA-256 recorded in versions.json); then one
   ``synthesize`` query per training site: each turns its own MRI into synthetic US locally.
2. **Stage A** (real + synthetic US) and 3. **stage B** (real US, class-weighted), teacher +
   LSNet distillation; after every round the training sites validate (histograms), and the
   paper's checkpoint rule (:class:`~ecs_models.training.metrics.CheckpointSelector`) on the
   pooled validation histograms, at each round's own operating point, selects the round whose
   model is kept.
4. **Final evaluation** of the selected model: every training site on its internal test split,
   every held-out center on all its images; the operating point is chosen on the pooled
   validation histograms of the selected round (sensitivity >= 0.95 first).
5. **Export**: ``model/lsnet.onnx`` + ``model/operating_point.json`` as centralized runs do.

After every round the run directory gets the checkpoint and a ``rounds.jsonl`` line
(:mod:`server.store`), and one progress line per round plus one line per center is printed.
``resume=true`` continues from the last completed round of the run in ``run_dir``: the phase's
Flower strategy restarts with the saved global arrays, server-optimizer state, round offset and
RNG states, so the remaining rounds are those of an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from omegaconf import DictConfig, OmegaConf

from ecs_models.build import build_classifier, build_gan, generator_keys, state_sha256
from ecs_models.export import check_onnx_parity, export_onnx
from ecs_models.training.binned_metrics import binned_metrics, binned_threshold
from ecs_models.training.distill import StageConfig
from ecs_models.training.metrics import CheckpointSelector
from ecs_models.training.runtime import seed_everything
from protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    GAN_LOSS,
    GENERATOR_RECORD,
    METRICS_RECORD,
    NUM_EXAMPLES,
    SITE_RECORD,
    TRAIN_LOSS,
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
    SynthesizeReply,
    TrainRequest,
)
from server.config import held_out_centers
from server.store import RunStore
from strategies.factory import StrategySpec, build_strategy
from strategies.fedbn import norm_keys
from strategies.validation import evaluate_problem
from strategies.wrapper import RoundReport, SiteAwareStrategy, center_metrics

__all__ = ["SimulatedServerCrash", "Sites", "discover_sites", "run_federation", "model_spec"]

Log = Callable[[str], None]
Arrays = dict[str, np.ndarray]


class SimulatedServerCrash(RuntimeError):
    """``debug.stop_after_round``: the server stops right after persisting that round."""


@dataclass(frozen=True)
class Sites:
    """Who is who: node id -> center, the training and the held-out nodes, their counts."""

    centers: dict[int, str]
    train: list[int]
    held_out: list[int]
    info: dict[str, SiteInfo]

    def with_mri(self) -> list[int]:
        return [n for n in self.train if self.info[self.centers[n]].n_mri_train > 0]

    def example_limits(self, phase: str) -> dict[int, float]:
        """Training node -> the most training examples it declared for ``phase`` at discovery."""
        return {n: float(self.info[self.centers[n]].max_train_examples(phase)) for n in self.train}


# -- configuration -> plain values ------------------------------------------------------------
def model_spec(cfg: DictConfig) -> ModelSpec:
    """Model definitions sent to clients: student, teacher (or None) and GAN, as plain dicts."""
    student = OmegaConf.to_container(cfg.model, resolve=True)
    size = int(cfg.training.img_size)
    if student["name"] in ("lsnet", "teacher"):
        student["img_size"] = size
    teacher = None
    if cfg.distillation:
        teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
        teacher["img_size"] = size
    gan = {"name": str(cfg.gan.name), "preset": str(cfg.gan.preset), "image_size": int(cfg.gan.image_size)}
    return ModelSpec(student=student, teacher=teacher, gan=gan)


def _to_numpy(record: ArrayRecord) -> Arrays:
    return {k: v.numpy() for k, v in record.items()}


def _to_record(arrays: Arrays) -> ArrayRecord:
    """C-contiguous arrays with their shapes kept: ``np.ascontiguousarray`` turned 0-d buffers
    (``num_batches_tracked``) into shape (1,), which FedAdam/FedYogi's shape check rejected."""
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in arrays.items()})


def _torch_state(module: torch.nn.Module) -> Arrays:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _rng_state() -> dict:
    """The process-global RNGs (Flower samples nodes with ``random``), saved with every round."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "  -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# -- sites -------------------------------------------------------------------------------------
def _send(grid: Grid, nodes: list[int], message_type: str, content: Callable[[int], RecordDict], timeout: float) -> list[Message]:
    messages = [Message(content=content(n), dst_node_id=n, message_type=message_type) for n in nodes]
    return list(grid.send_and_receive(messages, timeout=timeout)) if messages else []


def discover_sites(grid: Grid, *, expected: int, held_out: list[str], timeout: float, log: Log) -> Sites:
    """Wait for ``expected`` nodes, ask each which center it is, split training / held-out."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {expected} sites connected within {timeout:.0f}s")
        time.sleep(1.0)
    query = RecordDict({CONFIG_RECORD: ConfigRecord(InfoQuery().to_record())})
    replies = _send(grid, nodes, MessageType.QUERY, lambda _n: query, timeout)
    centers: dict[int, str] = {}
    info: dict[str, SiteInfo] = {}
    for reply in replies:
        try:
            if reply.has_error():
                raise MessageError(reply.error.reason)
            site = SiteInfo.from_records(reply.content[SITE_RECORD], reply.content[METRICS_RECORD])
        except (MessageError, KeyError) as exc:
            log(f"  site {reply.metadata.src_node_id} did not identify itself: {exc}")
            continue
        if site.center in info:
            raise ValueError(f"two nodes claim center {site.center!r}")
        centers[reply.metadata.src_node_id] = site.center
        info[site.center] = site
    unknown = sorted(set(held_out) - set(info))
    if unknown:
        raise ValueError(f"held_out_centers names {unknown}, but no connected site is called that; connected centers: "
                         f"{sorted(info)}. Correct the name (a SuperNode's node-config 'center', default its data "
                         "folder's name) so that no held-out hospital trains")
    train = sorted((n for n, c in centers.items() if c not in held_out), key=centers.get)
    held = sorted((n for n, c in centers.items() if c in held_out), key=centers.get)
    if not train:
        raise ValueError("no training site connected")
    return Sites(centers, train, held, info)


# -- the run -----------------------------------------------------------------------------------
class _Run:
    """State and steps of one federated run (see the module docstring)."""

    def __init__(self, grid: Grid, cfg: DictConfig, log: Log) -> None:
        self.grid, self.cfg, self.log = grid, cfg, log
        self.store = RunStore(cfg.run_dir)
        self.held_out = held_out_centers(cfg)
        self.spec = StrategySpec.from_config(OmegaConf.to_container(cfg.strategy, resolve=True))
        self.models = model_spec(cfg)
        self.part = cfg.participation
        self.timeout = float(self.part.round_timeout_s)
        self.state: dict = {}
        self.sites: Sites | None = None
        self.run_key = Path(str(cfg.run_dir)).resolve().name + f"-seed{int(cfg.seed)}"
        self.freeze_norm_stats = float(cfg.local.get("freeze_norm_stats") or 0.0)
        if not 0.0 <= self.freeze_norm_stats < 1.0:
            raise ValueError("local.freeze_norm_stats must be a fraction of each phase's rounds in [0, 1), "
                             f"got {self.freeze_norm_stats}")
        for stage in ("stage_a", "stage_b"):
            teacher_lr = cfg.training[stage].get("teacher_lr")
            try:  # the sites build this StageConfig; refuse its bad values before any round
                StageConfig(teacher_lr=None if teacher_lr is None else float(teacher_lr))
            except ValueError as exc:
                raise ValueError(f"training.{stage}.teacher_lr: {exc}") from None

    # phases ------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, int]]:
        gan_rounds = int(self.cfg.rounds.gan) if self.cfg.synthesis and not self.cfg.gan_artifact else 0
        return [("gan", gan_rounds), ("stage_a", int(self.cfg.rounds.stage_a)), ("stage_b", int(self.cfg.rounds.stage_b))]

    def _global_base(self, phase: str) -> int:
        base = 0
        for name, rounds in self.plan():
            if name == phase:
                return base
            base += rounds
        raise KeyError(phase)

    def fresh_state(self) -> dict:
        torch.manual_seed(int(self.cfg.seed))
        classifier = build_classifier(self.models)
        self.norm_keys = norm_keys(classifier)
        arrays = _torch_state(classifier)
        if self.spec.fedbn:
            arrays = {k: v for k, v in arrays.items() if k not in self.norm_keys}
        gan_arrays = None
        if self.cfg.synthesis and not self.cfg.gan_artifact:
            torch.manual_seed(int(self.cfg.seed))
            gan_arrays = _torch_state(build_gan(self.models.gan))
        return {"version": 1, "phase": None, "phase_round": 0, "global_round": 0, "completed": [],
                "gan_arrays": gan_arrays, "model_arrays": arrays, "strategy": None,
                "selector": CheckpointSelector().state_dict(), "best": None, "rng": None}

    def run_fields(self) -> dict:
        """The fields every request of this run carries (:class:`protocol.messages.RunFields`)."""
        tr = self.cfg.training
        return {"seed": int(self.cfg.seed), "run_key": self.run_key, "model_spec": self.models, "device": str(self.cfg.device),
                "fedbn": self.spec.fedbn, "img_size": int(tr.img_size), "preprocess_size": int(tr.preprocess_size),
                "eval_batch_size": int(tr.eval_batch_size), "bins": int(self.cfg.histogram_bins)}

    def train_request(self, phase: str) -> TrainRequest:
        """The phase's train message; the strategy sets each round's number and learning rate."""
        if phase == "gan":
            steps = int(self.cfg.local.gan_steps)
            return GanTrain(**self.run_fields(), local_steps=steps, total_steps=steps * int(self.cfg.rounds.gan),
                            batch_size=int(self.cfg.gan.batch_size), lr=float(self.cfg.gan.lr))
        tr = self.cfg.training
        return ClassifierTrain(
            **self.run_fields(), phase=phase, local_epochs=int(self.cfg.local.epochs),
            phase_rounds=max(1, int(self.cfg.rounds[phase])), batch_size=int(tr.batch_size),
            max_steps_per_epoch=int(self.cfg.local.max_steps_per_epoch or 0), freeze_norm_stats=self.freeze_norm_stats,
            synthetic_per_real=float(tr.synthetic_per_real),
            class_weighted=bool(tr[phase].get("class_weighted", phase == "stage_b")),
            teacher_lr=float(tr[phase].get("teacher_lr") or 0.0),  # 0: the stage's lr
            generator_sha256=str(self.state.get("generator_sha256") or ""))

    def round_config(self, phase: str) -> Callable[[int], dict]:
        """The stage's peak learning rate. Each site positions the phase's warm-up + cosine
        schedule at its round (``phase-round`` of ``phase-rounds``), so the global model follows the
        schedule of a centralized run; a fresh per-round schedule (warm-up and decay to 0 inside
        every round, measured in docs/federated.md) learned markedly slower."""
        if phase == "gan":
            return lambda _r: {}
        base = float(self.cfg.training[phase].lr)
        return lambda _r: {"lr": base}

    # rounds ------------------------------------------------------------------------------
    def on_round_end(self, report: RoundReport, arrays: ArrayRecord) -> None:
        key = "gan_arrays" if report.phase == "gan" else "model_arrays"
        self.state[key] = _to_numpy(arrays)
        self.state.update(phase=report.phase, phase_round=report.round, global_round=report.global_round,
                          strategy=self._strategy.state_dict())
        selected = False
        if report.phase != "gan" and report.val_pooled:
            selector = CheckpointSelector()
            selector.load_state_dict(self.state["selector"])
            neg, pos = (np.asarray(report.val_histograms[k]) for k in ("neg", "pos"))
            p = binned_metrics(neg, pos, binned_threshold(neg, pos))  # at this round's operating point
            selected = selector.update(report.global_round, p["sensitivity"], p["specificity"], p["auc"])
            self.state["selector"] = selector.state_dict()
            if selected:
                self.state["best"] = {"arrays": copy.deepcopy(self.state[key]), "phase": report.phase, "round": report.round,
                                      "global_round": report.global_round, "val_histograms": report.val_histograms,
                                      "val": report.val_pooled}
        self.state["rng"] = _rng_state()
        self.store.save_checkpoint(self.state)
        self.store.append_round({**report.to_json(), "selected": selected})
        self.print_round(report, selected)
        stop = self.cfg.debug.stop_after_round
        if stop is not None and report.global_round >= int(stop):
            raise SimulatedServerCrash(f"debug.stop_after_round={stop}: stopping after round {report.global_round}")

    def print_round(self, report: RoundReport, selected: bool) -> None:
        n_sampled = len(report.sampled)
        parts = [f"[ecs] {report.phase:<7} {report.round:>2}/{int(self.cfg.rounds[report.phase]):<2} (round {report.global_round:>2})",
                 f"sites {len(report.answered)}/{n_sampled}", f"{report.seconds:6.1f}s"]
        loss = report.train_pooled.get(TRAIN_LOSS, report.train_pooled.get(GAN_LOSS))
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        if report.val_pooled:
            p = report.val_pooled
            parts.append(f"val AUC {_fmt(p['auc'])} sens {_fmt(p['sensitivity'])} spec {_fmt(p['specificity'])}")
        if selected:
            parts.append("(kept)")
        if report.failed:
            parts.append(f"failed: {', '.join(sorted(report.failed))}")
        if report.rejected:
            parts.append(f"rejected: {', '.join(sorted(report.rejected))}")
        self.log(" | ".join(parts))
        for center in sorted(set(report.sampled) | set(report.val)):
            train = report.train.get(center, {})
            val = report.val.get(center, {})
            status = ("ok" if center in report.answered else "rejected" if center in report.rejected
                      else "failed" if center in report.failed else "-")
            t_loss = train.get(TRAIN_LOSS, train.get(GAN_LOSS))
            self.log(f"[ecs]     {center:<12} {status:<8} n={int(train.get(NUM_EXAMPLES, 0)):>5} loss {_fmt(t_loss)}"
                     f" | val n={int(val.get('n', 0)):>4} AUC {_fmt(val.get('auc'))} sens {_fmt(val.get('sensitivity'))}"
                     f" spec {_fmt(val.get('specificity'))}")

    def run_phase(self, phase: str, rounds: int) -> None:
        sites = self.sites
        assert sites is not None
        done = self.state["phase_round"] if self.state["phase"] == phase else 0
        train_nodes = sites.with_mri() if phase == "gan" else sites.train
        if not train_nodes:
            self.log(f"[ecs] {phase}: no site can train this phase; skipped")
            return
        if done < rounds:
            available = self.part.min_available_nodes
            inner = build_strategy(self.spec, fraction_train=float(self.part.fraction_train),
                                   min_train_nodes=min(int(self.part.min_train_nodes), len(train_nodes)),
                                   min_available_nodes=min(int(available) if available else len(train_nodes), len(train_nodes)))
            statistics = [k for k in self.state["model_arrays"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
            self._strategy = SiteAwareStrategy(
                inner, phase=phase, centers=sites.centers, train_nodes=train_nodes,
                eval_nodes=[] if phase == "gan" else sites.train, round_offset=done,
                global_round_base=self._global_base(phase),
                min_train_replies=min(int(self.part.min_train_replies), len(train_nodes)),
                max_failed_rounds=int(self.part.max_failed_rounds), outlier_factor=float(self.part.outlier_factor),
                max_examples=sites.example_limits(phase), histogram_bins=int(self.cfg.histogram_bins),
                statistics_keys=statistics if phase != "gan" else (), round_config=self.round_config(phase),
                on_round_end=self.on_round_end)
            if self.state["phase"] == phase and self.state["strategy"] is not None:
                self._strategy.load_state_dict(self.state["strategy"])
            key = "gan_arrays" if phase == "gan" else "model_arrays"
            evaluate = Evaluate(**self.run_fields(), split="val")
            self._strategy.start(self.grid, _to_record(self.state[key]), num_rounds=rounds - done, timeout=self.timeout,
                                 train_config=ConfigRecord(self.train_request(phase).to_record()),
                                 evaluate_config=ConfigRecord(evaluate.to_record()), evaluate_fn=self._strategy.evaluate_fn)
        self.state["completed"].append(phase)
        self.state.update(phase=phase, phase_round=rounds, strategy=None)
        self.store.save_checkpoint(self.state)

    # synthesis -----------------------------------------------------------------------------
    def generator(self) -> Arrays | None:
        if not self.cfg.synthesis:
            return None
        if self.cfg.gan_artifact:
            path = Path(str(self.cfg.gan_artifact))
            import hashlib

            file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
            self.store.record("gan_artifact", {"path": str(path.resolve()), "sha256": file_sha})
            model = build_gan(self.models.gan)
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"] if "model" in saved else saved)
            arrays = _torch_state(model)
        else:
            arrays = self.state["gan_arrays"]
        return {k: arrays[k] for k in generator_keys(sorted(arrays))}

    def synthesize(self) -> None:
        generator = self.generator()
        if generator is None:
            return
        sha = state_sha256(generator)
        self.state["generator_sha256"] = sha
        self.store.record("generator_sha256", sha)
        assert self.sites is not None
        nodes = self.sites.with_mri()
        request = Synthesize(**self.run_fields(), generator_sha256=sha)
        content = RecordDict({GENERATOR_RECORD: _to_record(generator), CONFIG_RECORD: ConfigRecord(request.to_record())})
        replies = _send(self.grid, nodes, MessageType.QUERY, lambda _n: content, self.timeout)
        made = {}
        for reply in replies:
            center = self.sites.centers.get(reply.metadata.src_node_id, "?")
            if reply.has_error():
                self.log(f"[ecs] synthesis failed at {center}: {reply.error.reason} (it trains stage A on real US only)")
            else:
                made[center] = int(SynthesizeReply.from_record(reply.content[METRICS_RECORD]).num_examples)
        self.log(f"[ecs] synthesis with generator {sha[:12]}: {made} synthetic images per site")

    # final ---------------------------------------------------------------------------------
    def fedbn_norms(self, arrays: Arrays) -> Arrays:
        """FedBN: the sites' norm states, example-weighted, for held-out centers and export."""
        assert self.sites is not None
        query = RecordDict({CONFIG_RECORD: ConfigRecord(NormStateQuery(**self.run_fields()).to_record())})
        replies = _send(self.grid, self.sites.train, MessageType.QUERY, lambda _n: query, self.timeout)
        valid = [r.content for r in replies if not r.has_error()]
        if not valid:
            raise RuntimeError("FedBN: no site returned its normalization state")
        averaged = _to_numpy(aggregate_arrayrecords(valid, NUM_EXAMPLES))
        return {**arrays, **averaged}

    def final_evaluation(self) -> dict:
        assert self.sites is not None
        best = self.state["best"] or {"arrays": self.state["model_arrays"], "val_histograms": None, "global_round": self.state["global_round"]}
        hist = best["val_histograms"]
        threshold = binned_threshold(np.asarray(hist["neg"]), np.asarray(hist["pos"])) if hist else 0.5
        arrays = best["arrays"]
        if self.spec.fedbn:
            arrays = self.fedbn_norms(arrays)
        record = _to_record(arrays)
        nodes = self.sites.train + self.sites.held_out

        def content(node: int) -> RecordDict:
            request = Evaluate(**self.run_fields(), split="test" if node in self.sites.train else "all", threshold=threshold)
            return RecordDict({ARRAYS_RECORD: record, CONFIG_RECORD: ConfigRecord(request.to_record())})

        replies = _send(self.grid, nodes, MessageType.EVALUATE, content, self.timeout)
        lines, pooled = [], {"train": None, "held_out": None}
        for reply in sorted(replies, key=lambda r: self.sites.centers.get(r.metadata.src_node_id, "")):
            node = reply.metadata.src_node_id
            center = self.sites.centers[node]
            role = "train" if node in self.sites.train else "held_out"
            if reply.has_error():
                lines.append({"center": center, "role": role, "error": reply.error.reason})
                continue
            problem = evaluate_problem(reply.content, int(self.cfg.histogram_bins))
            if problem is not None:
                self.log(f"[ecs] rejected the final evaluation of {center}: {problem}")
                lines.append({"center": center, "role": role, "error": f"rejected: {problem}"})
                continue
            m = EvaluateReply.from_record(reply.content[METRICS_RECORD])
            lines.append({"center": center, "role": role, "split": "test" if role == "train" else "all", **center_metrics(m, threshold)})
            acc = pooled[role] or {"neg": 0, "pos": 0, "confusion": dict.fromkeys(m.confusion(), 0)}
            acc["neg"] = acc["neg"] + np.asarray(m.hist_neg, np.int64)
            acc["pos"] = acc["pos"] + np.asarray(m.hist_pos, np.int64)
            acc["confusion"] = {k: acc["confusion"][k] + v for k, v in m.confusion().items()}
            pooled[role] = acc
        summary = {role: binned_metrics(acc["neg"], acc["pos"], threshold, acc["confusion"])
                   for role, acc in pooled.items() if acc is not None}
        self.store.write_jsonl("final_evaluation.jsonl", lines)
        return {"threshold": threshold, "selected_round": best.get("global_round"), "centers": lines,
                "internal_test": summary.get("train"), "held_out": summary.get("held_out"), "full_arrays": arrays,
                "val": best.get("val")}

    def export(self, arrays: Arrays, threshold: float, val: dict | None) -> dict:
        """The selected student as ONNX + operating point (as ``ecs-train`` writes them)."""
        classifier = build_classifier(self.models)
        state = classifier.state_dict()
        state.update({k: torch.as_tensor(v) for k, v in arrays.items()})
        classifier.load_state_dict(state)
        student = classifier.student.cpu().eval()
        size = int(self.cfg.training.img_size)
        name = self.models.student["name"]
        stem = "lsnet" if name == "lsnet" else name.replace(":", "_")
        model_dir = Path(str(self.cfg.run_dir)) / "model"
        onnx_path = export_onnx(student, model_dir / f"{stem}.onnx", (1, 1, size, size))
        example = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))  # static batch 1
        diff = check_onnx_parity(student, onnx_path, example)
        operating_point = {
            "threshold": threshold, "target_sensitivity": CheckpointSelector().target_sensitivity,
            "score": "softmax probability of class 1 (myometrial invasion)",
            "input": {"shape": [1, 1, size, size], "range": [-1.0, 1.0], "preprocessing": "client.data PreprocessConfig, resized"},
            "val_sensitivity": (val or {}).get("sensitivity"), "val_specificity": (val or {}).get("specificity"),
            "chosen_on": "pooled validation score histograms of the training sites (federated)",
            "onnx_max_abs_diff": diff,
        }
        (model_dir / "operating_point.json").write_text(json.dumps(operating_point, indent=2) + "\n")
        return {"onnx": str(onnx_path), "onnx_max_abs_diff": diff}

    def print_final(self, final: dict) -> None:
        self.log(f"[ecs] final evaluation (selected round {final['selected_round']}, threshold {final['threshold']:.4f}):")
        self.log(f"[ecs]   {'center':<12} {'role':<9} {'n':>5} {'pos':>4}  {'AUC':>5}  {'sens':>5}  {'spec':>5}")
        for line in final["centers"]:
            if "error" in line:
                self.log(f"[ecs]   {line['center']:<12} {line['role']:<9} error: {line['error']}")
                continue
            self.log(f"[ecs]   {line['center']:<12} {line['role']:<9} {line['n']:>5} {line['positives']:>4}  {_fmt(line['auc'])}"
                     f"  {_fmt(line['sensitivity'])}  {_fmt(line['specificity'])}")
        for role, label in (("internal_test", "pooled internal test"), ("held_out", "pooled held-out")):
            m = final.get(role)
            if m:
                self.log(f"[ecs]   {label:<22} {m['n']:>5} {m['positives']:>4}  {_fmt(m['auc'])}  {_fmt(m['sensitivity'])}  {_fmt(m['specificity'])}")

    # main ----------------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.perf_counter()
        cfg = self.cfg
        resume = bool(cfg.resume)
        self.store.start(cfg, resume=resume)
        self.state = self.fresh_state()
        checkpoint = self.store.load_checkpoint() if resume else None
        if checkpoint is not None:
            self.state = checkpoint
            self.store.truncate_rounds(checkpoint["global_round"])
            self.log(f"[ecs] resuming {cfg.run_dir} after {checkpoint['phase']} round {checkpoint['phase_round']} "
                     f"(global round {checkpoint['global_round']})")
        elif resume:
            self.log(f"[ecs] resume=true but no checkpoint in {cfg.run_dir}: starting from round 1")
        expected = int(cfg.expected_sites or cfg.participation.min_available_nodes or 1)
        self.sites = discover_sites(self.grid, expected=expected, held_out=self.held_out, timeout=self.timeout, log=self.log)
        s = self.sites
        self.log(f"[ecs] run {cfg.run_dir}: strategy {self.spec.name}, training centers "
                 f"{[s.centers[n] for n in s.train]}, held-out {[s.centers[n] for n in s.held_out]}")
        if self.state["rng"] is not None:
            _set_rng_state(self.state["rng"])
        else:
            seed_everything(int(cfg.seed))
        for phase, rounds in self.plan():
            if phase in self.state["completed"]:
                continue
            if phase == "stage_a":
                self.synthesize()
            if rounds > 0:
                self.run_phase(phase, rounds)
            else:
                self.state["completed"].append(phase)
        self.store.save_arrays("final_arrays.npz", self.state["model_arrays"])
        final = self.final_evaluation()
        exported = self.export(final.pop("full_arrays"), final["threshold"], final.get("val"))
        self.print_final(final)
        metrics = {"experiment": str(cfg.experiment_name), "strategy": self.spec.name, "seed": int(cfg.seed),
                   "training_centers": [s.centers[n] for n in s.train], "held_out_centers": [s.centers[n] for n in s.held_out],
                   "rounds": OmegaConf.to_container(cfg.rounds), "seconds": time.perf_counter() - start, **final, **exported}
        self.store.write_json("metrics.json", metrics)
        return metrics


def run_federation(grid: Grid, cfg: DictConfig, log: Log = print) -> dict:
    """Run (or resume) the federated experiment ``cfg`` over ``grid``; returns metrics.json's content."""
    return _Run(grid, cfg, log).run()

