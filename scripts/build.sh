#!/usr/bin/env bash
# Builds aegis, aegisd and the static guest harness. Usage: scripts/build.sh [--release]
# The harness is placed beside aegisd, where the daemon looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debug builds are test builds: their aegisd offers `--backend fake`, which the integration
# tests start (it runs guest commands as host processes, no isolation). Release builds never do.
profile=debug
cargo_flags=(--features aegisd/fake)
if [[ "${1:-}" == "--release" ]]; then
  profile=release
  cargo_flags=(--release)
fi

echo "==> building aegis and aegisd ($profile)"
cargo build "${cargo_flags[@]}" -p aegis -p aegisd

# PID 1 of every guest: fully static, small.
echo "==> building the guest harness (static)"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile harness -p aegis-harness --target x86_64-unknown-linux-gnu
# aegisd finds it there when run from this tree (target/$profile/aegis-harness is cargo's own,
# dynamically linked build of the same crate and cannot be PID 1).
echo "==> binaries: target/$profile/{aegis,aegisd}, target/x86_64-unknown-linux-gnu/harness/aegis-harness"
