#!/usr/bin/env bash
# Image benchmark (issue 4), all in one run, side by side, against a real registry on loopback
# (Debian docker-registry) serving two images with the same files (busybox root + ~90 MiB of
# host files): A in 1 layer, B in 5 layers.
#   (1) `aegis image pull` (download + layer disks) vs `skopeo copy docker:// dir:` (download
#       only), with aegis's time split into download and disk making from aegisd's log,
#   (2) first boot (right after the pull, page cache dropped) and warm boot, 5 layers vs 1,
#   (3) `aegis app publish --from DIR` time, and `aegis app serve` -> first HTTP 200.
# See bench/README.md.
#
#   bench/images/run.sh                    # N=8 WARM=10 APPS=5 CONTENT_MB=90 (about 4 min)
#   N=15 WARM=20 bench/images/run.sh
#
# Needs root (drops the page cache), target/release/{aegis,aegisd} and the static harness
# (scripts/build.sh --release), the kernel in the Aegis cache (aegis setup), qemu-system-x86_64,
# docker-registry, skopeo, busybox-static, file, python3. Starts its own registry and aegisd
# (temporary home, the cache symlinked in) and stops them by pid at the end, also on Ctrl-C.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/../.."

OUT=${OUT:-bench/results/images-$(date +%F).md}
exec python3 bench/images/images.py \
    --iterations "${N:-8}" --warm "${WARM:-10}" --apps "${APPS:-5}" --content-mb "${CONTENT_MB:-90}" \
    --out "$OUT"
