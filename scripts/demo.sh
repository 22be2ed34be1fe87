#!/usr/bin/env bash
# The main job on its embedded default: generate the default synthetic multicenter cohort
# (4 training + 2 held-out hospitals, ultrasound and MRI as DICOM) and pre-flight every
# center's folder the way a hospital would before joining a federation.
# Usage: bash scripts/demo.sh [extra ecs-cohort overrides...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/setup-env.sh
out="cohorts/quick-seed0"
ecs-cohort cohort=quick seed=0 workers="$(nproc)" output_dir="$out" overwrite=true "$@"  # reused when identical
for center in "$out"/*/; do
  echo "== ecs-data check ${center%/}"
  ecs-data check "${center%/}" --cache-dir "$out/.cache"
done
