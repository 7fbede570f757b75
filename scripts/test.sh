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
cargo test --workspace --no-fail-fast -- --test-threads=2
