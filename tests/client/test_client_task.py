"""The site logic of the ClientApp on the tiny cohort: site mapping, FedBN, evaluation counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client import task
from client.cohort import cohort_centers
from ecs_models.build import build_classifier
from protocol.messages import ClassifierTrain, Evaluate, ModelSpec
from server.context import model_spec
from strategies.fedbn import norm_keys, split_norm

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    from server.config import compose_config

    return model_spec(compose_config(["experiment=smoke"]))


RUN = {"seed": 0, "run_key": "test", "device": "cpu", "img_size": 96, "preprocess_size": 96, "eval_batch_size": 16, "bins": 1000}


def _train(spec: ModelSpec, **extra: object) -> ClassifierTrain:
    fields = {"phase": "stage_b", "batch_size": 4, "local_epochs": 1, "phase_rounds": 1, "max_steps_per_epoch": 1, "lr": 1e-3,
              "phase_round": 1, "global_round": 1, "class_weighted": True, **extra}
    return ClassifierTrain(**RUN, model_spec=spec, **fields)


def test_partition_ids_map_to_centers_largest_first_including_held_out(tiny_cohort: Path, tmp_path: Path) -> None:
    names = cohort_centers(tiny_cohort)
    summary = json.loads((tiny_cohort / "cohort.json").read_text())
    files = {c["name"]: c["us_files"] for c in summary["centers"]}
    assert sorted(names) == sorted(files) and {"community", "teaching"} <= set(names)  # held-out ones are nodes too
    # longest job first: the Simulation Runtime queues a round's messages in partition-id order
    assert [files[n] for n in names] == sorted(files.values(), reverse=True)
    assert len(set(files.values())) > 1  # the tiny cohort's centers differ in size, so the order is tested
    site = task.site_from_config({"partition-id": 1}, {"cohort-dir": str(tiny_cohort), "cache-dir": str(tmp_path)})
    assert site.center == names[1] and site.data_dir == tiny_cohort / names[1]
    deployed = task.site_from_config({"data-dir": str(tiny_cohort / "clinic")}, {})
    assert deployed.center == "clinic" and deployed.cache_dir is None
    info = task.site_info(deployed)
    assert info.n_mri_train == 0 and info.n_us_all >= info.n_us_train > 0


def test_fedbn_client_keeps_its_norm_state_and_never_sends_it(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    model = build_classifier(spec)
    keys = norm_keys(model)
    shared, _ = split_norm({k: v.clone() for k, v in model.state_dict().items()}, keys)
    arrays, reply = task.train_classifier_round(site, shared, _train(spec, fedbn=True))
    assert not set(arrays) & keys and reply.num_examples > 0
    assert reply.num_examples == task.site_info(site).max_train_examples("stage_b")  # what the server checks it against
    local = site.store("test").load("norm")
    assert set(local) == keys
    trained_var = [k for k in keys if k.endswith("running_var")][0]
    assert not torch.allclose(local[trained_var], torch.ones_like(local[trained_var]))  # statistics moved, locally
    # the next round starts from the site's own norms, not from the (norm-free) global arrays
    again, _ = task.train_classifier_round(site, arrays, _train(spec, fedbn=True, global_round=2))
    assert set(again) == set(arrays)
    plain, _ = task.train_classifier_round(site, {k: v for k, v in model.state_dict().items()}, _train(spec))
    assert keys <= set(plain)  # FedAvg sends everything


def test_evaluation_sends_counts_not_scores(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    site = task.Site("teaching", tiny_cohort / "teaching", tmp_path)
    torch.manual_seed(0)
    state = build_classifier(spec).state_dict()
    out = task.evaluate_split(site, state, Evaluate(**RUN, model_spec=spec, split="all", threshold=0.5))
    n = int(out.num_examples)
    assert n == task.site_info(site).n_us_all
    assert len(out.hist_neg) == len(out.hist_pos) == 1000
    assert sum(out.hist_neg) + sum(out.hist_pos) == n == sum(out.confusion().values())
    assert all(isinstance(v, int) for v in out.hist_neg) and np.all(np.asarray(out.hist_pos) >= 0)


def test_round_seeds_do_not_depend_on_node_ids() -> None:
    assert task.round_seed(0, "a", "stage_a", 3) == task.round_seed(0, "a", "stage_a", 3)
    assert len({task.round_seed(0, c, p, r) for c in "ab" for p in ("gan", "stage_a") for r in (1, 2)}) == 8



def test_stage_class_weighting_follows_the_message(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    """``class_weighted`` applies to whichever stage the server names (the server's default per stage:
    tests/server/test_federation.py)."""
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in build_classifier(spec).state_dict().items()}

    def trained(**extra: object) -> dict:  # 4 steps of 8: batches with both classes, where weights matter
        arrays, _ = task.train_classifier_round(site, state, _train(spec, phase="stage_a", batch_size=8, max_steps_per_epoch=4, **extra))
        return arrays

    unweighted, again, weighted = trained(class_weighted=False), trained(class_weighted=False), trained(class_weighted=True)
    assert all(torch.equal(unweighted[k], again[k]) for k in unweighted)
    assert not all(torch.equal(unweighted[k], weighted[k]) for k in unweighted)


def test_norm_statistics_freeze_from_a_fraction_of_the_phase() -> None:
    """``freeze-norm-stats`` 0.5 of 16 rounds: rounds 9-16 train with frozen statistics; 0: never."""
    assert [r for r in range(1, 17) if task.norm_stats_frozen(r, 16, 0.5)] == list(range(9, 17))
    assert [r for r in range(1, 3) if task.norm_stats_frozen(r, 2, 0.5)] == [2]
    assert not any(task.norm_stats_frozen(r, 16, 0.0) for r in range(1, 17))
    with pytest.raises(ValueError, match="freeze_norm_stats"):
        task.norm_stats_frozen(1, 16, 1.0)


def test_a_site_returns_the_global_statistics_in_frozen_rounds(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in build_classifier(spec).state_dict().items()}
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    # round 2 of 2 with freeze-norm-stats 0.5 (that unfrozen rounds update them: test_training_norm_stats)
    arrays, _ = task.train_classifier_round(site, state, _train(spec, freeze_norm_stats=0.5, phase_round=2, phase_rounds=2))
    assert stats and all(torch.equal(arrays[k], state[k]) for k in stats)
    assert not all(torch.equal(arrays[k], state[k]) for k in state if k not in stats)


def test_a_site_trains_the_teacher_at_the_messages_teacher_lr(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    assert spec.teacher, "the smoke experiment distills"
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in build_classifier(spec).state_dict().items()}
    arrays, _ = task.train_classifier_round(site, state, _train(spec, teacher_lr=1e-12))
    weights = [k for k in state if state[k].is_floating_point() and not k.endswith(("running_mean", "running_var"))]
    moved = {k for k in weights if not torch.allclose(arrays[k], state[k], atol=1e-9)}
    assert any(k.startswith("student.") for k in moved)
    assert not any(k.startswith(("teacher.", "teacher_projector.")) for k in moved)
