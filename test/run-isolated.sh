#!/usr/bin/env bash
# Runs the test suite inside its own network namespace with only loopback, so no test can reach
# any other network by mistake (see docs/testing.md). Extra arguments go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec npx vitest run "$@"' sh "$@"
fi
echo "run-isolated: not root, running without a private network namespace" >&2
exec npx vitest run "$@"
