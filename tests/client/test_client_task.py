"""The site logic of the ClientApp on the tiny cohort: site mapping, FedBN, evaluation counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client import task
from ecs_models.build import build_classifier
from server.federation import model_spec
from strategies.fedbn import norm_keys, split_norm


@pytest.fixture(scope="module")
def spec() -> dict:
    from server.config import compose_config

    return model_spec(compose_config(["experiment=smoke"]))


def _params(spec: dict, tmp_path: Path, **extra: object) -> dict:
    return {"seed": 0, "run-key": "test", "model-spec": json.dumps(spec), "device": "cpu", "img-size": 96,
            "preprocess-size": 96, "eval-batch-size": 16, "batch-size": 4, "local-epochs": 1, "max-steps-per-epoch": 1,
            "lr": 1e-3, "phase": "stage_b", "phase-round": 1, "global-round": 1, "bins": 1000, **extra}


def test_partition_ids_map_to_centers_largest_first_including_held_out(tiny_cohort: Path, tmp_path: Path) -> None:
    names = task.cohort_centers(tiny_cohort)
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
    assert info["n-mri-train"] == 0 and info["n-us-all"] >= info["n-us-train"] > 0


def test_fedbn_client_keeps_its_norm_state_and_never_sends_it(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    model = build_classifier(spec)
    keys = norm_keys(model)
    shared, _ = split_norm({k: v.clone() for k, v in model.state_dict().items()}, keys)
    arrays, metrics = task.train_classifier_round(site, shared, _params(spec, tmp_path, fedbn=True))
    assert not set(arrays) & keys and metrics["num-examples"] > 0
    assert metrics["num-examples"] == task.site_info(site)["max-train-examples-stage_b"]  # what the server checks it against
    local = site.store("test").load("norm")
    assert set(local) == keys
    trained_var = [k for k in keys if k.endswith("running_var")][0]
    assert not torch.allclose(local[trained_var], torch.ones_like(local[trained_var]))  # statistics moved, locally
    # the next round starts from the site's own norms, not from the (norm-free) global arrays
    again, _ = task.train_classifier_round(site, arrays, _params(spec, tmp_path, fedbn=True, **{"global-round": 2}))
    assert set(again) == set(arrays)
    plain, _ = task.train_classifier_round(site, {k: v for k, v in model.state_dict().items()}, _params(spec, tmp_path))
    assert keys <= set(plain)  # FedAvg sends everything


def test_evaluation_sends_counts_not_scores(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    site = task.Site("teaching", tiny_cohort / "teaching", tmp_path)
    torch.manual_seed(0)
    state = build_classifier(spec).state_dict()
    out = task.evaluate_split(site, state, _params(spec, tmp_path, split="all", threshold=0.5, bins=1000))
    n = int(out["num-examples"])
    assert n == task.site_info(site)["n-us-all"]
    assert len(out["hist-neg"]) == len(out["hist-pos"]) == 1000
    assert sum(out["hist-neg"]) + sum(out["hist-pos"]) == n == out["tp"] + out["fp"] + out["tn"] + out["fn"]
    assert all(isinstance(v, int) for v in out["hist-neg"]) and np.all(np.asarray(out["hist-pos"]) >= 0)


def test_round_seeds_do_not_depend_on_node_ids() -> None:
    assert task.round_seed(0, "a", "stage_a", 3) == task.round_seed(0, "a", "stage_a", 3)
    assert len({task.round_seed(0, c, p, r) for c in "ab" for p in ("gan", "stage_a") for r in (1, 2)}) == 8



def test_stage_class_weighting_follows_the_message(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    """``class-weighted`` applies to whichever stage the server names; stage A defaults to unweighted."""
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in build_classifier(spec).state_dict().items()}

    def trained(**extra: object) -> dict:  # 4 steps of 8: batches with both classes, where weights matter
        params = _params(spec, tmp_path, phase="stage_a", **{"batch-size": 8, "max-steps-per-epoch": 4}, **extra)
        arrays, _ = task.train_classifier_round(site, state, params)
        return arrays

    default, unweighted, weighted = trained(), trained(**{"class-weighted": False}), trained(**{"class-weighted": True})
    assert all(torch.equal(default[k], unweighted[k]) for k in default)
    assert not all(torch.equal(default[k], weighted[k]) for k in default)


def test_norm_statistics_freeze_from_a_fraction_of_the_phase() -> None:
    """``freeze-norm-stats`` 0.5 of 16 rounds: rounds 9-16 train with frozen statistics; 0: never."""
    assert [r for r in range(1, 17) if task.norm_stats_frozen(r, 16, 0.5)] == list(range(9, 17))
    assert [r for r in range(1, 3) if task.norm_stats_frozen(r, 2, 0.5)] == [2]
    assert not any(task.norm_stats_frozen(r, 16, 0.0) for r in range(1, 17))
    with pytest.raises(ValueError, match="freeze-norm-stats"):
        task.norm_stats_frozen(1, 16, 1.0)


def test_a_site_returns_the_global_statistics_in_frozen_rounds(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in build_classifier(spec).state_dict().items()}
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    # round 2 of 2 with freeze-norm-stats 0.5 (that unfrozen rounds update them: test_training_norm_stats)
    params = _params(spec, tmp_path, **{"freeze-norm-stats": 0.5, "phase-round": 2, "phase-rounds": 2})
    arrays, _ = task.train_classifier_round(site, state, params)
    assert stats and all(torch.equal(arrays[k], state[k]) for k in stats)
    assert not all(torch.equal(arrays[k], state[k]) for k in state if k not in stats)


def test_a_site_trains_the_teacher_at_the_messages_teacher_lr(tiny_cohort: Path, tmp_path: Path, spec: dict) -> None:
    assert spec.get("teacher"), "the smoke experiment distills"
    site = task.Site("university", tiny_cohort / "university", tmp_path)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in build_classifier(spec).state_dict().items()}
    arrays, _ = task.train_classifier_round(site, state, _params(spec, tmp_path, **{"teacher-lr": 1e-12}))
    weights = [k for k in state if state[k].is_floating_point() and not k.endswith(("running_mean", "running_var"))]
    moved = {k for k in weights if not torch.allclose(arrays[k], state[k], atol=1e-9)}
    assert any(k.startswith("student.") for k in moved)
    assert not any(k.startswith(("teacher.", "teacher_projector.")) for k in moved)
