#!/usr/bin/env bash
# Installs the Debian 12 packages Aegis needs to build guests and run microVMs. Idempotent.
set -euo pipefail

PACKAGES=(
  # VMM and guest artefacts (qemu-system-common, pulled in by qemu-system-x86, ships virtiofsd:
  # workspaces)
  qemu-system-x86 qemu-system-common qemu-utils linux-source-6.1 debootstrap busybox-static e2fsprogs erofs-utils
  # kernel build
  build-essential bc flex bison libelf-dev libssl-dev cpio xz-utils kmod
  # images and registries (image tests), networking tools
  docker-registry skopeo iproute2 nftables
  # test and benchmark clients
  curl socat python3 python3-venv python3-grpcio python3-websockets haproxy wrk sqlite3
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "==> Debian packages already installed"
fi
# Python test tools Debian 12 does not package: openapi-spec-validator checks api/openapi.json
# (crates/daemon/tests/openapi_valid.rs); schemathesis fuzzes a live daemon against it
# (tests/tests/schemathesis.rs); httpx, pytest and pytest-asyncio run the Python SDK's tests
# (sdk/python/tests, from scripts/test.sh). Debian's Python refuses system-wide pip installs
# (PEP 668), so they get their own venv, where those tests look for them.
PY_VENV=/opt/aegis/python
PY_PACKAGES=(openapi-spec-validator==0.9.0 schemathesis==4.32.5 httpx==0.28.1 pytest==8.4.2
  pytest-asyncio==0.25.3)
# Installed when any pinned version is missing (not just the module): pins move.
missing_py=$(comm -23 <(printf '%s\n' "${PY_PACKAGES[@]}" | sort) \
  <("$PY_VENV/bin/python3" -m pip freeze 2>/dev/null | sort))
if [[ -n $missing_py ]]; then
  echo "==> installing Python test tools into $PY_VENV: $(echo $missing_py)"
  [[ -x $PY_VENV/bin/python3 ]] || python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/python3" -m pip install --quiet "${PY_PACKAGES[@]}"
else
  echo "==> Python test tools already installed"
fi
# The docker-registry package starts a registry on :5000; the tests start their own on loopback.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

if ! command -v cargo >/dev/null; then
  echo "error: Rust (cargo) is not installed. Install a stable toolchain (>= 1.85) with rustup," >&2
  echo "       e.g. 'curl https://sh.rustup.rs -sSf | sh', then run this script again." >&2
  exit 1
fi
