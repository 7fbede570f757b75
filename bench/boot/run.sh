#!/usr/bin/env bash
# Boot benchmark (issue 2): bare QEMU boot-to-power-off vs `aegis run --image busybox -- true`,
# interleaved in one run, plus aegisd idle RSS and per-VM host RSS, plus a step-by-step
# breakdown of where `aegis run` spends its time. See bench/README.md.
#
#   bench/boot/run.sh                  # N=10 iterations of each variant
#   N=20 bench/boot/run.sh
#   OUT=/tmp/boot.md DIAG=3 bench/boot/run.sh
#
# Needs: target/release/{aegis,aegisd} and the static harness (scripts/build.sh --release),
# a built kernel and busybox + debian images in the Aegis cache (aegis setup), qemu-system-x86_64,
# gcc (static libc: libc6-dev), cpio, python3. Starts its own aegisd in a temporary home (the
# cache is symlinked in) and stops it at the end; every process it starts is stopped by pid.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."

N=${N:-10}
OUT=${OUT:-bench/results/boot-$(date +%F).md}
exec python3 bench/boot/boot.py --iterations "$N" --diag "${DIAG:-5}" --out "$OUT"
