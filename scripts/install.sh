#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to "hello from aegis" printed inside a microVM:
# installs packages, builds Aegis, builds the guest kernel and base images (cached under
# ~/.aegis/cache), starts the daemon and runs a first task.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
scripts/build.sh --release
install -m 0755 target/release/aegis target/release/aegisd /usr/local/bin/
install -m 0755 target/x86_64-unknown-linux-gnu/harness/aegis-harness /usr/local/bin/

echo "==> building the guest kernel and images (first time: ~10 minutes; cached afterwards)"
aegis setup
aegis up
aegis run -- echo "hello from aegis"
