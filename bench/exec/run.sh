#!/usr/bin/env bash
# Exec benchmark (issue 10): `aegis exec ID -- true` on a running vs a paused instance vs
# `aegis run -- true`, interleaved in one run with a private aegisd (QEMU backend).
#
#   bench/exec/run.sh                      # N=20 execs of each kind, 5 `aegis run`
#   N=50 RUNS=10 BIN=target/debug bench/exec/run.sh
#
# Needs: target/release/{aegis,aegisd} (scripts/build.sh --release; BIN=target/debug for a
# debug build), the static harness, a built kernel and the debian image (aegis setup), python3.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/results/exec-$(date +%F).md}
# The raw session baseline (crates/vmm/examples/spawn_rtt.rs).
cargo build --quiet --release -p aegis-vmm --example spawn_rtt
exec python3 bench/exec/exec.py --iterations "${N:-20}" --runs "${RUNS:-5}" \
  --bin "${BIN:-target/release}" --out "$OUT"
