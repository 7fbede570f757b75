#!/usr/bin/env bash
# Regenerates the figures of docs/RELIABILITY.md: runs the tests that check each promise
# (they print their figures), then scripts/fuzz.sh with a short budget, and writes what they
# printed and whether each passed to target/reliability/. Nightly-style: not part of
# scripts/test.sh.
#
#   scripts/reliability.sh [--no-vm] [FUZZ_SECONDS_PER_TARGET]     (default 30)
#
# --no-vm skips the tests that boot real VMs (crash recovery and a full snapshot disk under
# QEMU), for a host without the guest artefacts. Those need scripts/build.sh first, the guest
# kernel and images under ~/.aegis/cache (scripts/install.sh), and AEGIS_HARNESS naming the
# static harness (target/x86_64-unknown-linux-gnu/harness/aegis-harness) unless it sits
# beside aegisd. FUZZ_SECONDS_PER_TARGET=0 skips fuzzing.
# Exits non-zero if any test or fuzz target failed; every step still runs.
set -uo pipefail

vm=1
if [[ ${1:-} == --no-vm ]]; then
    vm=0
    shift
fi
budget=${1:-30}
if ! [[ $budget =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [--no-vm] [FUZZ_SECONDS_PER_TARGET]  (a whole number, default 30; 0 skips fuzzing)" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$root/target/reliability
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
failed=0

# step NAME COMMAND...: runs COMMAND with its output in $out/NAME.log, records pass/fail and
# the figure lines (the tests print them with "peak", "measured" or "attempted").
step() {
    local name=$1
    shift
    echo "==> $name: $*"
    if "$@" >"$out/$name.log" 2>&1; then
        echo "PASS $name" | tee -a "$summary"
    else
        echo "FAIL $name (see $out/$name.log)" | tee -a "$summary"
        failed=1
    fi
    grep -E 'peak|measured|attempted' "$out/$name.log" | sed "s/^/    /" | tee -a "$summary"
}

# Real VMs run one at a time: they share two emulated cores.
step proto-hostile-peer \
    cargo test -p aegis-proto --test hostile_peer -- --nocapture --test-threads=1
step proto-session \
    cargo test -p aegis-proto --lib -- --test-threads=2
step daemon-hostile-guest \
    cargo test -p aegisd --test hostile_guest -- --nocapture --test-threads=1
step daemon-artifacts-hostile \
    cargo test -p aegisd --test artifacts_hostile -- --nocapture --test-threads=1
if ((vm)); then
    step disk-full \
        cargo test -p aegis-tests --test disk_full -- --nocapture --test-threads=1
    step crash-recovery \
        cargo test -p aegis-tests --test crash_recovery -- --nocapture --test-threads=1
else
    step disk-full \
        cargo test -p aegis-tests --test disk_full task_logs -- --nocapture --test-threads=1
    echo "SKIP crash-recovery and the snapshot disk (--no-vm)" | tee -a "$summary"
fi
if ((budget > 0)); then
    step fuzz scripts/fuzz.sh "$budget"
    if [[ -f target/fuzz/summary.tsv ]]; then
        sed "s/^/    /" target/fuzz/summary.tsv | tee -a "$summary"
    fi
fi

echo "summary: $summary"
exit $failed
