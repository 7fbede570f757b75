#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests with real microVMs (QEMU), the
# conformance suite against every backend that can boot on this host, and the SDK tests.
# Needs what scripts/install.sh sets up (packages, guest kernel and images).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh
# Guest artefacts are cached under ~/.aegis/cache; this is a no-op when they are current.
target/debug/aegis setup

export AEGIS_HARNESS="$PWD/target/x86_64-unknown-linux-gnu/harness/aegis-harness"
status=0
# Unit tests and in-process daemon tests (fake backend): no VM.
cargo test --workspace --exclude aegis-tests --no-fail-fast -- --test-threads=2 || status=1
# Integration tests: a real daemon, real microVMs under QEMU, the real CLI. Some start
# target/debug/aegisd with the fake backend: make sure that binary has it, whatever the step
# above last linked there.
cargo build -p aegisd --features fake
cargo test -p aegis-tests --no-fail-fast -- --test-threads=2 --skip conformance || status=1
# Conformance: every backend that can boot here; the others print why they are skipped.
cargo test -p aegis-tests --test conformance --no-fail-fast -- --test-threads=2 --nocapture || status=1
# The Python SDK against a real aegisd (fake backend: the aegisd built just above), installed
# into the test-tools venv of scripts/deps.sh as a user would install it.
py=/opt/aegis/python/bin/python3
if [[ -x "$py" ]]; then
  cargo build -p aegisd --features fake
  "$py" -m pip install --quiet ./sdk/python || status=1
  AEGISD="$PWD/target/debug/aegisd" "$py" -m pytest sdk/python/tests -q -p no:cacheprovider || status=1
else
  echo "error: $py is missing: run scripts/deps.sh (it creates the venv the SDK tests use)" >&2
  status=1
fi
exit $status
