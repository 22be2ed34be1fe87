"""Federation cost: wall time, time outside local training, bytes per site, deployment vs simulation.

Runs a federated experiment with ``ecs-simulate`` (Flower's Simulation Runtime) and takes every
figure from its run directory (``rounds.jsonl``, ``metrics.json``):

(a) wall time of the experiment, end to end (the ``ecs-simulate`` command: SuperLink, Ray, run,
    stop) and of the ServerApp, by phase;
(b) per round, the share of the train step's wall time spent outside local training: the
    server's train step (send the global arrays -> sites train -> replies -> aggregation)
    against the slowest site's ``train-seconds`` (its local optimisation loop, reported in its
    reply). Also shown: against the slot schedule, the time local training needs when the
    sites queue for the runtime's CPU slots (each site's ``train-seconds``, taken in the
    Simulation Runtime's dispatch order, partition-id order, starting on the first free slot):
    what remains is Flower, serialization and the sites' set-up; the sites' whole handler time
    (``client-seconds``: arrays in, model and data set-up, training, arrays out) and the whole
    round with validation;
(c) bytes each site sends per round (serialized arrays of its train reply,
    ``ArrayRecord.count_bytes``) against the model's parameter bytes;
(d) the smoke experiment on the Deployment Runtime (a local insecure SuperLink + one SuperNode
    per center, ``flwr run`` against it, every process stopped by PID) vs the Simulation
    Runtime: wall time of each.

    python benchmarks/bench_federated.py                          # smoke: (a)-(d), a few minutes on 2 cores
    python benchmarks/bench_federated.py --experiment quick       # the issue's figure (tens of minutes), + smoke (d)
    python benchmarks/bench_federated.py --experiment quick --no-deployment
    python benchmarks/bench_federated.py --analyse runs/federated/quick/manual   # (b), (c) of an existing run only
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from protocol.messages import TrainReply, wire_key  # plain Python
from simulations.federated.guard import Guarded  # standard library only: --analyse stays light

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {"HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
       "PYTHONUNBUFFERED": "1"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="smoke", help="federated experiment for (a)-(c) (default: smoke)")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("ECS_HOME", REPO)),
                        help="ECS_HOME: cohorts, cache and runs (default: $ECS_HOME or the repository)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folders of this benchmark (default: <home>/runs/bench/federated/<experiment>-<time>)")
    parser.add_argument("--no-deployment", action="store_true", help="skip (d), the Deployment Runtime run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run (default 3600)")
    parser.add_argument("--analyse", type=Path, default=None, help="only print (b) and (c) of this existing run folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--dispatch", choices=("size", "name"), default="size",
                        help="the run's partition-id order, for the slot schedule: size = largest center first "
                             "(client.cohort.cohort_centers), name = alphabetical (runs before 2026-11-27)")
    return parser.parse_args()


# -- runs --------------------------------------------------------------------------------------
def _echo(line: str) -> None:
    """Progress: the ecs-simulate lines and one line per round (not the per-center lines)."""
    if "[ecs-simulate]" in line or ("[ecs] " in line and "(round" in line) or "final evaluation" in line:
        print("   ", line[line.index("["):] if "[" in line else line, flush=True)


def _stream(command: list[str], env: dict[str, str], log_path: Path, timeout: float) -> int:
    """Run ``command`` under a guard, its output to ``log_path`` (progress echoed); stopped after ``timeout``.

    The guard sends SIGTERM (``ecs-simulate`` then stops everything it started; ``flwr run`` only
    streams), and stops the command just the same if this benchmark is interrupted or killed.
    """
    with log_path.open("w") as log:
        process = Guarded(command, log_path.with_suffix(".processes.json"), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, grace_s=60)
        timer = threading.Timer(timeout, process.request_stop)
        timer.start()
        try:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                log.write(line)
                _echo(line.rstrip("\n"))
            return process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.stop()


def run_simulation(experiment: str, overrides: list[str], home: Path, run_dir: Path, timeout: float) -> dict:
    env = {**os.environ, **ENV, "ECS_HOME": str(home)}
    command = [str(BIN / "ecs-simulate"), f"experiment={experiment}", f"run_dir={run_dir}", *overrides]
    print(f"  $ ECS_HOME={home} ecs-simulate {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    code = _stream(command, env, run_dir.parent / f"{run_dir.name}.log", timeout)
    return {"runtime": "simulation", "exit_code": code, "wall_s": time.perf_counter() - start, "run_dir": str(run_dir)}


def run_deployment(cfg, overrides: list[str], home: Path, run_dir: Path, timeout: float) -> dict:  # noqa: ANN001
    """The experiment on a loopback Deployment Runtime: SuperLink + one SuperNode per center."""
    from client.cohort import center_roles, cohort_centers
    from simulations.federated.loopback import LoopbackFederation
    from simulations.federated.simulate import write_run_config

    cohort_dir = Path(str(cfg.cohort_dir)).resolve()
    centers = sorted(cohort_centers(cohort_dir))
    held_out = center_roles(cohort_dir)[1]
    cache = Path(str(cfg.paths.cache)).resolve()
    work = run_dir.parent / f"{run_dir.name}-federation"
    work.mkdir(parents=True, exist_ok=True)
    # one hospital = one process tree with the CPUs a virtual SuperNode gets in the simulation (Ray
    # sets OMP_NUM_THREADS = num_cpus for its actors); torch's default (all cores) in 5 concurrent
    # ClientApp processes on 2 cores spins threads against each other (measured: ~20x slower steps)
    threads = str(int(cfg.federation.client_num_cpus))
    fed = LoopbackFederation.create(work, connection="bench", extra_env={**ENV, "ECS_HOME": str(home), "OMP_NUM_THREADS": threads})
    result = {"runtime": "deployment", "run_dir": str(run_dir), "sites": len(centers)}
    start = time.perf_counter()
    try:
        fed.start_superlink(database=False)  # in-memory state: the SQLite file hit 'database is locked' under load
        for center in centers:
            fed.start_supernode(center, {"data-dir": cohort_dir / center, "center": center, "cache-dir": cache})
        fed.wait_online(len(centers), timeout=120)
        result["startup_s"] = time.perf_counter() - start
        print(f"  SuperLink (insecure, in-memory state, 127.0.0.1:{fed.port}) + {len(centers)} SuperNodes "
              f"(OMP_NUM_THREADS={threads}) online in {result['startup_s']:.1f} s", flush=True)
        run_overrides = [*overrides, f"held_out_centers=[{','.join(held_out)}]", f"expected_sites={len(centers)}"]
        toml = write_run_config(work / "run_config.toml", {"experiment": str(cfg.experiment_name), "overrides": " ".join(run_overrides),
                                                            "run-dir": str(run_dir), "resume": False})
        command = [str(BIN / "flwr"), "run", str(REPO), fed.connection, "--run-config", str(toml), "--stream"]
        print(f"  $ {' '.join(command[1:])}", flush=True)
        run_start = time.perf_counter()
        result["exit_code"] = _stream(command, fed.env, work / "flwr-run.log", timeout)
        result["flwr_run_s"] = time.perf_counter() - run_start
    except (TimeoutError, RuntimeError, OSError) as exc:
        result.update(exit_code=1, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        left = fed.stop()
        result["left_running"] = left
    result["wall_s"] = time.perf_counter() - start
    return result


# -- figures from a run folder ---------------------------------------------------------------
def _rounds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]


def model_bytes(run_dir: Path) -> dict[str, int]:
    """Parameter bytes (and state-dict bytes) of the run's classifier (student + teacher) and GAN."""
    from omegaconf import OmegaConf

    from ecs_models.build import build_classifier, build_gan
    from server.context import model_spec

    cfg = OmegaConf.load(run_dir / "config.yaml")
    spec = model_spec(cfg)
    out = {}
    classifier = build_classifier(spec)
    for name, model in (("classifier", classifier), ("gan", build_gan(spec.gan))):
        out[f"{name}_params"] = sum(p.numel() * p.element_size() for p in model.parameters())
        out[f"{name}_state"] = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    out["student_params"] = sum(p.numel() * p.element_size() for p in classifier.student.parameters())
    return out


def slot_schedule(seconds: list[float], slots: int) -> float:
    """Makespan (s) of jobs taken in the given order, each starting on the first free of ``slots``."""
    free = [0.0] * max(1, slots)
    for duration in seconds:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def dispatch_order(run_dir: Path, dispatch: str) -> list[str] | None:
    """The run's partition-id order (``client.cohort.cohort_centers``) or, for ``name``, None (by name)."""
    if dispatch == "name":
        return None
    from omegaconf import OmegaConf

    from client.cohort import cohort_centers

    return cohort_centers(str(OmegaConf.load(run_dir / "config.yaml").cohort_dir))


def round_figures(run_dir: Path, slots: int, order: list[str] | None = None) -> list[dict]:
    """Per-round timing figures; ``order`` = the sites' dispatch order (None: by name)."""
    rank = {c: i for i, c in enumerate(order or [])}
    rows = []
    for r in _rounds(run_dir):
        train_key, client_key = wire_key(TrainReply, "train_seconds"), wire_key(TrainReply, "client_seconds")
        sites = {c: m for c, m in r["train"].items() if train_key in m}
        train_s = [sites[c][train_key] for c in sorted(sites, key=lambda c: (rank.get(c, len(rank)), c))]
        client_s = [m.get(client_key, m.get("seconds", 0.0)) for m in sites.values()]
        step = r.get("train_seconds") or r["seconds"]
        longest = max(train_s, default=0.0)
        critical = slot_schedule(train_s, slots) if train_s else 0.0
        rows.append({
            "round": r["global_round"], "phase": r["phase"], "sites": len(r["answered"]), "round_s": r["seconds"],
            "train_step_s": step, "evaluate_s": r.get("evaluate_seconds", 0.0), "max_train_s": longest,
            "max_client_s": max(client_s, default=0.0), "critical_s": critical,
            "outside_pct": 100 * (step - longest) / step if step else float("nan"),
            "outside_critical_pct": 100 * (step - critical) / step if step else float("nan"),
            "outside_round_pct": 100 * (r["seconds"] - longest) / r["seconds"] if r["seconds"] else float("nan"),
            "sent_bytes": r.get("sent_bytes", 0), "reply_bytes": r.get("reply_bytes", {}),
        })
    return rows


def print_rounds(rows: list[dict], slots: int) -> dict:
    print(f"{'round':>5} {'phase':<8} {'sites':>5} {'step s':>7} {'max train s':>11} {'outside %':>9} "
          f"{'schedule s':>12} {'outside %':>9} {'max handler s':>13} {'valid. s':>8} {'round s':>7} {'outside %':>9}")
    for x in rows:
        print(f"{x['round']:>5} {x['phase']:<8} {x['sites']:>5} {x['train_step_s']:>7.2f} {x['max_train_s']:>11.2f} "
              f"{x['outside_pct']:>9.1f} {x['critical_s']:>12.2f} {x['outside_critical_pct']:>9.1f} {x['max_client_s']:>13.2f} "
              f"{x['evaluate_s']:>8.2f} {x['round_s']:>7.2f} {x['outside_round_pct']:>9.1f}")
    step = sum(x["train_step_s"] for x in rows)
    totals = {
        "outside_pct": 100 * (step - sum(x["max_train_s"] for x in rows)) / step,
        "outside_critical_pct": 100 * (step - sum(x["critical_s"] for x in rows)) / step,
        "outside_round_pct": 100 * (1 - sum(x["max_train_s"] for x in rows) / sum(x["round_s"] for x in rows)),
        "median_outside_pct": statistics.median(x["outside_pct"] for x in rows),
    }
    print(f"all rounds: {totals['outside_pct']:.1f} % of the train steps' wall time is outside the slowest site's local "
          f"training (median round {totals['median_outside_pct']:.1f} %; goal < 15 %); {totals['outside_critical_pct']:.1f} % "
          f"outside the {slots}-slot schedule of local training; {totals['outside_round_pct']:.1f} % of whole rounds "
          "(validation counted)")
    return totals


def print_bytes(rows: list[dict], sizes: dict[str, int]) -> dict:
    out = {}
    print(f"{'phase':<8} {'sent to a site KiB':>18} {'reply per site KiB':>18} {'model params KiB':>16} {'reply / params':>14}")
    for phase in dict.fromkeys(x["phase"] for x in rows):
        replies = [b for x in rows if x["phase"] == phase for b in x["reply_bytes"].values()]
        sent = [x["sent_bytes"] for x in rows if x["phase"] == phase]
        params = sizes["gan_params"] if phase == "gan" else sizes["classifier_params"]
        if not replies:
            continue
        mean = statistics.mean(replies)
        out[phase] = {"sent_bytes": statistics.mean(sent), "reply_bytes": mean, "param_bytes": params, "ratio": mean / params}
        print(f"{phase:<8} {statistics.mean(sent) / 1024:>18.1f} {mean / 1024:>18.1f} {params / 1024:>16.1f} {mean / params:>14.3f}")
    print(f"model: classifier (student + teacher) {sizes['classifier_params'] / 1024:.1f} KiB of parameters "
          f"(state dict with buffers {sizes['classifier_state'] / 1024:.1f} KiB; the student alone "
          f"{sizes['student_params'] / 1024:.1f} KiB); SG-CycleGAN {sizes['gan_params'] / 1024:.1f} KiB "
          f"(state {sizes['gan_state'] / 1024:.1f} KiB); float32")
    return out


def analyse(run_dir: Path, slots: int, dispatch: str = "size") -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    rows = round_figures(run_dir, slots, dispatch_order(run_dir, dispatch))
    print(f"\n(b) time outside local training per round: {run_dir}")
    print("    step = the server's train step (send -> local training -> replies -> aggregation); max train = the slowest "
          f"site's train-seconds; slot schedule = the sites' train-seconds in {dispatch} dispatch order on {slots} slots")
    totals = print_rounds(rows, slots)
    print("\n(c) bytes per site per round (serialized arrays of each train reply) vs the model's parameter bytes")
    sizes = model_bytes(run_dir)
    per_phase = print_bytes(rows, sizes)
    return {"server_s": metrics.get("seconds"), "rounds": rows, "totals": totals, "bytes": per_phase, "model_bytes": sizes}


def phase_seconds(run_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in _rounds(run_dir):
        out[r["phase"]] = out.get(r["phase"], 0.0) + r["seconds"]
    return out


def main() -> None:
    args = parse_args()
    slots = max(1, (os.cpu_count() or 1))
    if args.analyse is not None:
        analyse(args.analyse.resolve(), slots, args.dispatch)
        return
    from simulations.centralized.run import ensure_cohort
    from simulations.federated.compare import compose_experiment

    os.environ["ECS_HOME"] = str(args.home.resolve())
    home = args.home.resolve()
    out = (args.out or home / "runs" / "bench" / "federated" / f"{args.experiment}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose_experiment(args.experiment, list(args.overrides))
    slots = max(1, min(slots, int(cfg.federation.ray_num_cpus or slots)) // int(cfg.federation.client_num_cpus))
    start = time.perf_counter()
    cohort = ensure_cohort(cfg, lambda m: print("  " + m, flush=True))
    print(f"cohort {cohort} ready in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPU cores; runs in {out}")
    figures: dict = {"experiment": args.experiment, "overrides": args.overrides, "cpu_cores": os.cpu_count()}

    print(f"\n(a) wall time of ecs-simulate experiment={args.experiment} (Simulation Runtime)")
    sim = run_simulation(args.experiment, list(args.overrides), home, out / "simulation", args.timeout)
    figures["simulation"] = sim
    if sim["exit_code"] != 0 or not (out / "simulation" / "metrics.json").is_file():
        sys.exit(f"the simulation failed (exit code {sim['exit_code']}); see {out / 'simulation.log'}")
    server_s = json.loads((out / "simulation" / "metrics.json").read_text())["seconds"]
    phases = phase_seconds(out / "simulation")
    print(f"end to end {sim['wall_s']:.1f} s; ServerApp {server_s:.1f} s = rounds "
          + ", ".join(f"{p} {s:.1f} s" for p, s in phases.items())
          + f" + {server_s - sum(phases.values()):.1f} s (site discovery, synthesis, checkpoints, final evaluation, export)")
    figures["simulation"].update(analyse(out / "simulation", slots))

    if not args.no_deployment:
        smoke_sim = out / "simulation"
        if args.experiment != "smoke":
            print("\n(d) the smoke experiment on the Simulation Runtime (reference for the deployment run)")
            ref = run_simulation("smoke", list(args.overrides), home, out / "smoke-simulation", args.timeout)
            smoke_sim = out / "smoke-simulation"
            figures["smoke_simulation"] = ref
        else:
            ref = sim
        smoke_cfg = compose_experiment("smoke", list(args.overrides))
        print("\n(d) the smoke experiment on the Deployment Runtime (local insecure SuperLink, one SuperNode per center)")
        dep = run_deployment(smoke_cfg, list(args.overrides), home, out / "deployment", args.timeout)
        figures["deployment"] = dep
        if dep.get("exit_code") != 0 or not (out / "deployment" / "metrics.json").is_file():
            from simulations.federated.compare import last_error

            detail = dep.get("error") or last_error(out / "deployment-federation" / "flwr-run.log")
            print(f"the deployment run failed: {detail} (flwr run exit code {dep.get('exit_code')}); see "
                  f"{out / 'deployment-federation'}; processes left running: {dep.get('left_running') or 'none'}")
        else:
            dep_server = json.loads((out / "deployment" / "metrics.json").read_text())["seconds"]
            ref_server = json.loads((smoke_sim / "metrics.json").read_text())["seconds"]
            dep_rounds = round_figures(out / "deployment", dep["sites"])
            ref_rounds = round_figures(smoke_sim, slots, dispatch_order(smoke_sim, "size"))
            dep_step = statistics.mean(x["train_step_s"] for x in dep_rounds)
            ref_step = statistics.mean(x["train_step_s"] for x in ref_rounds)
            dep["server_s"], dep["mean_train_step_s"] = dep_server, dep_step
            print(f"\n(d) smoke, {dep['sites']} sites: wall time end to end (start -> every process stopped), ServerApp, mean train step")
            print(f"{'runtime':<12} {'end to end s':>12} {'ServerApp s':>11} {'mean train step s':>17}")
            print(f"{'simulation':<12} {ref['wall_s']:>12.1f} {ref_server:>11.1f} {ref_step:>17.2f}")
            print(f"{'deployment':<12} {dep['wall_s']:>12.1f} {dep_server:>11.1f} {dep_step:>17.2f}   "
                  f"(SuperLink + SuperNodes online in {dep['startup_s']:.1f} s, flwr run {dep['flwr_run_s']:.1f} s)")
            print(f"{'ratio':<12} {dep['wall_s'] / ref['wall_s']:>12.2f} {dep_server / ref_server:>11.2f} {dep_step / ref_step:>17.2f}")
            print(f"processes left running after the deployment: {dep['left_running'] or 'none'}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
