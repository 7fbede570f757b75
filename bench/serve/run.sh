#!/usr/bin/env bash
# Serve-mode benchmark (issue 3), all in one run, side by side:
#   (a) cold wake to the first byte of HTTP 200 through the router vs a bare QEMU boot,
#   (b) resume from pause to HTTP 200 (median, p99),
#   (c) restore from the memory snapshot to HTTP 200 vs cold wake,
#   (d) steady state with wrk: router vs haproxy in front of it vs a direct (no Aegis) path.
# See bench/README.md.
#
#   bench/serve/run.sh
#   COLD=8 RESUME=60 RESTORE=15 ROUNDS=3 DURATION=5s bench/serve/run.sh
#
# Needs: target/release/{aegis,aegisd} and the static harness (scripts/build.sh --release), a
# built kernel and the debian image in the Aegis cache, qemu-system-x86_64, gcc, cpio, curl, wrk,
# haproxy, busybox-static, python3. Starts its own aegisd in a temporary home (the cache is
# symlinked in), its own bare QEMUs and haproxies, and stops all of them (by pid) at the end.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."

OUT=${OUT:-bench/results/serve-$(date +%F).md}
exec python3 bench/serve/serve.py \
    --cold "${COLD:-5}" --resume "${RESUME:-40}" --restore "${RESTORE:-10}" \
    --rounds "${ROUNDS:-3}" --duration "${DURATION:-5s}" --conns "${CONNS:-16}" --threads "${THREADS:-2}" \
    --out "$OUT"
