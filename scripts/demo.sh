#!/usr/bin/env bash
# The main job on its embedded default: generate the default synthetic multicenter cohort
# (4 training + 2 held-out hospitals, ultrasound and MRI as DICOM), pre-flight every center's
# folder the way a hospital would before joining, then run the whole federated experiment on
# Flower's local Simulation Runtime (SG-CycleGAN -> stage A -> stage B -> evaluation on the
# held-out hospitals) and print its summary table.
# Usage: bash scripts/demo.sh [extra ecs-simulate overrides...]   e.g. strategy=fedprox
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/setup-env.sh
out="cohorts/quick-seed0"
ecs-cohort cohort=quick seed=0 workers="$(nproc)" output_dir="$out" overwrite=true  # reused when identical
# The check decodes every file once and fills the training cache at the CPU recipe's frame size
# (configs/training/cpu.yaml: preprocess_size), so the federation below starts from the cache.
for center in "$out"/*/; do
  echo "== ecs-data check ${center%/}"
  ecs-data check "${center%/}" --cache-dir .cache/preprocessed --output-size 160
done
echo "== ecs-simulate experiment=quick $*"
ecs-simulate experiment=quick "$@"  # reads the cohort in $out (configs/paths: cohorts/quick-seed0)
