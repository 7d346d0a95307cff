#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine (as root), then the npm packages.
# Each part lives in test/setup.d/NN-*.sh and is idempotent: it returns quickly when its tools are present.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] && [ -z "${SPUFF_SKIP_APT:-}" ]; then
  echo "test/setup.sh: run as root (it installs Debian packages), or set SPUFF_SKIP_APT=1 if they are present" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ] && [ -z "${SPUFF_SKIP_APT:-}" ]; then
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; export APT_UPDATED=1; fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
export -f apt_install
for part in test/setup.d/*.sh; do
  [ -e "$part" ] || continue
  echo "setup: $part" >&2
  bash "$part"
done
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
