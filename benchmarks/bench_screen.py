"""ecs-screen per-image latency on one thread, LSNet against MobileViT-XXS, and the clinic install's size.

    python benchmarks/bench_screen.py                          # the ultrasound samples of pydicom(-data)
    python benchmarks/bench_screen.py --data-dir DIR --rounds 5
    python benchmarks/bench_screen.py --clinic-env /path/venv  # size of an existing clinic environment

Both models are exported as runs export them (``ecs_models.bundle.export_student``: LSNet at 320 px
and timm's MobileViT-XXS at 256 px, random weights, the same 352 px preprocess) and loaded as
``ecs-screen`` loads them (``clinic.model.ScreeningModel``, one ONNX Runtime thread; numpy and scipy
held to one thread too). Per image and model, interleaved so a busy machine slows both alike:

* decode included: ``clinic.screen.screen_file`` (read, decode, preprocess, domain check, model);
* decode excluded: the model alone on the prepared input (``ScreeningModel.probabilities``).

p50 / p95 over every (file, round). Install size: the installed files of ``ecs-fl[clinic]`` and of
``ecs-fl[train]`` and everything they require (from each distribution's RECORD), the first in a
fresh clinic environment (``scripts/make-clinic-env.sh``), the second in the running environment.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy / scipy load their thread pools
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from bench_decode import sample_ultrasound_files  # noqa: E402
from bench_latency import _cpu_name, _load  # noqa: E402

from clinic.model import ScreeningModel  # noqa: E402
from clinic.screen import screen_file  # noqa: E402
from ecs_models import create_model  # noqa: E402
from ecs_models.bundle import export_student  # noqa: E402
from ecs_models.preprocessing import PreprocessConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the installed size of a distribution with extras and its requirement closure, in that interpreter
SIZE_SNIPPET = r"""
import json, re, sys
from importlib import metadata
todo, seen, total, names = [(sys.argv[1], set(sys.argv[2].split(",")) - {""})], set(), 0, []
while todo:
    name, extras = todo.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue  # a requirement of another platform or Python
    seen.add(key)
    names.append(key)
    for f in dist.files or []:
        path = dist.locate_file(f)
        total += path.stat().st_size if path.is_file() else 0
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        wanted = re.findall(r'extra\s*==\s*"([^"]+)"', marker)
        if wanted and not set(wanted) & extras:
            continue
        match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(\[([^\]]*)\])?", spec)
        todo.append((match.group(1), {e.strip() for e in (match.group(3) or "").split(",") if e.strip()}))
print(json.dumps({"bytes": total, "distributions": len(names)}))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="DICOM files to screen (default: pydicom's US samples)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the files")
    parser.add_argument("--clinic-env", type=Path, help="an existing clinic venv to size (default: build one)")
    parser.add_argument("--no-size", action="store_true", help="skip the install sizes")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def export_bundles(folder: Path) -> dict[str, ScreeningModel]:
    """LSNet@320 and MobileViT-XXS@256 bundles (random weights), loaded as ecs-screen loads them."""
    models = {}
    torch.manual_seed(0)  # as bench_latency
    for label, name, size in (("lsnet@320", "lsnet", 320), ("mobilevit_xxs@256", "timm:mobilevit_xxs", 256)):
        model = create_model(name, in_chans=1).eval()  # as bench_latency builds them
        export_student(model, folder / label, name=name, size=size, threshold=0.5, target_sensitivity=0.95, val=None,
                       chosen_on="benchmark", preprocess=PreprocessConfig(output_size=352), run={"kind": "benchmark"})
        models[label] = ScreeningModel(folder / label, threads=1)
    return models


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2),
            "n": len(values)}


def time_screening(models: dict[str, ScreeningModel], files: list[Path], rounds: int) -> dict:
    """Per model: decode-included and model-only latencies (ms), interleaved per file."""
    prepared = {label: {} for label in models}
    for label, model in models.items():  # warm-up, and the inputs for the model-only timing
        for path in files:
            result = screen_file(model, path)
            if result.prepared is not None and result.probability is not None:
                prepared[label][path] = result.prepared.inputs
    usable = [p for p in files if all(p in prepared[label] for label in models)]
    total = {label: [] for label in models}
    alone = {label: [] for label in models}
    for _ in range(rounds):
        for path in usable:
            for label, model in models.items():
                start = time.perf_counter()
                screen_file(model, path)
                total[label].append((time.perf_counter() - start) * 1e3)
                start = time.perf_counter()
                model.probabilities(prepared[label][path])
                alone[label].append((time.perf_counter() - start) * 1e3)
    return {"files": len(usable), "rounds": rounds,
            "models": {label: {"decode_included_ms": percentiles(total[label]),
                               "decode_excluded_ms": percentiles(alone[label])} for label in models}}


def install_sizes(clinic_env: Path | None) -> dict:
    """Installed bytes of ecs-fl[clinic] (a clinic venv) and ecs-fl[train] (this environment)."""
    with tempfile.TemporaryDirectory() as tmp:
        if clinic_env is None:
            clinic_env = Path(tmp) / "clinic"
            start = time.perf_counter()
            subprocess.run(["bash", str(REPO / "scripts" / "make-clinic-env.sh"), str(clinic_env), sys.executable], check=True)
            print(f"clinic environment built in {time.perf_counter() - start:.1f} s", flush=True)
        sizes = {}
        for label, python, extras in (("clinic", clinic_env / "bin" / "python", "clinic"), ("train", Path(sys.executable), "train")):
            done = subprocess.run([str(python), "-c", SIZE_SNIPPET, "ecs-fl", extras], capture_output=True, text=True, check=True)
            sizes[label] = json.loads(done.stdout)
    return {label: {"MB": round(s["bytes"] / 1e6, 1), "distributions": s["distributions"]} for label, s in sizes.items()}


def main() -> None:
    args = parse_args()
    files = sorted(p for p in args.data_dir.rglob("*") if p.is_file()) if args.data_dir else sample_ultrasound_files()
    load = {"before": _load()}
    with tempfile.TemporaryDirectory() as tmp:
        models = export_bundles(Path(tmp))
        figures = time_screening(models, files, args.rounds)
    load["after"] = _load()
    figures["machine"] = (f"{_cpu_name()}, {os.cpu_count()} cores; onnxruntime {onnxruntime.__version__}, 1 thread; "
                          f"load average (1/5/15 min) {load['before']} before, {load['after']} after")
    print(f"ecs-screen latency, {figures['files']} ultrasound files x {figures['rounds']} rounds (ms, p50 / p95):")
    for label, m in figures["models"].items():
        inc, exc = m["decode_included_ms"], m["decode_excluded_ms"]
        print(f"  {label:<18} decode included {inc['p50']:8.2f} / {inc['p95']:8.2f}   "
              f"model alone {exc['p50']:7.2f} / {exc['p95']:7.2f}")
    print(f"  {figures['machine']}")
    if not args.no_size:
        figures["install"] = install_sizes(args.clinic_env)
        for label, s in figures["install"].items():
            print(f"install ecs-fl[{label}]: {s['MB']:.1f} MB in {s['distributions']} distributions")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
