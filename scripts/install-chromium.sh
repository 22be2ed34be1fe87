#!/usr/bin/env bash
# Install Debian's chromium if it is missing: the run report's tests render HTML with it (headless,
# no network; tests/headless.py). Only the test command needs it (scripts/test.sh starts this in the
# background while the virtual environment is set up: the install is mostly download and unpack).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "[setup] installing Debian's chromium (the report tests render HTML with it)" >&2
start=$SECONDS
sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
if $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null; then
  echo "[setup] chromium installed in $((SECONDS - start)) s" >&2
else
  echo "[setup] could not install chromium: the report's rendering tests will fail" >&2
  exit 1
fi
