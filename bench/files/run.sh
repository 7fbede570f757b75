#!/usr/bin/env bash
# File copy throughput (issue 10): `aegis cp` in and out of a running instance vs the raw
# channel (a TCP stream through the router and the session) in the same run, interleaved.
# See bench/README.md.
#
#   bench/files/run.sh
#   MIB=64 ROUNDS=3 PROFILE=debug bench/files/run.sh
#
# Needs: target/$PROFILE/{aegis,aegisd} and the static harness (scripts/build.sh [--release]),
# a built kernel and the debian image in the Aegis cache, qemu-system-x86_64, python3. Starts
# its own aegisd in a temporary home (the cache is symlinked in) and stops it at the end.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."

OUT=${OUT:-bench/results/files-$(date +%F).md}
exec python3 bench/files/files.py --mib "${MIB:-64}" --rounds "${ROUNDS:-3}" \
    --profile "${PROFILE:-release}" --out "$OUT"
