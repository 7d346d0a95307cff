#!/usr/bin/env bash
# npm run bench: installs the tools it needs, builds, and writes docs/performance.md.
# Measurements run inside a private network namespace (loopback only), like the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  need=()
  for p in hyperfine time hcloud-cli openssh-server openssh-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; fi
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build >/dev/null
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec node --import tsx bench/bench.ts "$@"' sh "$@"
fi
exec node --import tsx bench/bench.ts "$@"
