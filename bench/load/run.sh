#!/usr/bin/env bash
# Load benchmark (issue 9): C concurrent connections across N instances for a bounded time,
# half the instances steady and half pausing and waking in bursts; aegisd's RSS and fd count
# before, at peak, after and once settled, against stated bounds. See bench/README.md.
#
#   bench/load/run.sh
#   INSTANCES=20 CONNS=1000 DURATION=60 bench/load/run.sh
#
# Needs target/release/{aegis,aegisd} and the static harness (scripts/build.sh --release) and
# the busybox image in the Aegis cache. Starts its own aegisd in a temporary home and stops it.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."

OUT=${OUT:-bench/results/load-$(date +%F).md}
exec python3 bench/load/load.py --instances "${INSTANCES:-20}" --conns "${CONNS:-1000}" \
    --duration "${DURATION:-60}" --pause-after "${PAUSE_AFTER:-4s}" --out "$OUT"
