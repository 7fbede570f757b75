#!/usr/bin/env bash
# Build the guest artefacts (kernel, busybox and debian base images) into the Aegis cache
# ($AEGIS_HOME, default ~/.aegis) without the CLI. Same code path as `aegis setup`.
#
#   scripts/build-guest.sh [all|kernel|busybox|debian|list]
#
# Needs root for the debian image (debootstrap). Apt packages it relies on:
#   linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev
#   busybox-static debootstrap e2fsprogs
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -p aegis-image --example build-guest -- "${@:-all}"
