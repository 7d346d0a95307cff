#!/usr/bin/env bash
# Installs the Debian packages spuff needs to run VMs on this machine (local QEMU provider) and to build its
# base image. Run as root on Debian/Ubuntu. It first checks for Node.js >= 20 and npm (which it does not install)
# and stops at once, before touching anything, when they are missing. macOS: see docs/providers/local.md.
set -euo pipefail
# Node.js first: nothing else is worth installing without it, and Debian 12's own nodejs (18) is too old.
node_advice() {  # builtins only: PATH may hold nothing useful yet
  printf '%s\n' >&2 \
    "install-deps: spuff needs Node.js 20 or newer and npm ($1)." \
    "  Debian 13 (trixie):   apt-get install nodejs npm     # Node.js 20" \
    "  Debian 12 (bookworm): its nodejs package is 18, too old; install Node.js 20+ from upstream:" \
    "                        https://nodejs.org/en/download (or NodeSource's deb packages, or nvm)" \
    "  Ubuntu 24.04:         its nodejs is 18 as well: upstream Node.js 20+ as for Debian 12" \
    "Then run this script again."
  exit 1
}
command -v node >/dev/null 2>&1 || node_advice "no node on PATH"
node_version=$(node --version 2>/dev/null || true)
node_major=${node_version#v}
node_major=${node_major%%.*}
[[ "$node_major" =~ ^[0-9]+$ ]] && [ "$node_major" -ge 20 ] || node_advice "found node ${node_version:-that prints no version}"
command -v npm >/dev/null 2>&1 || node_advice "node $node_version has no npm next to it"

if [ "$(uname -m)" != x86_64 ]; then
  echo "install-deps: the local provider runs amd64 (x86_64) machines only today; on $(uname -m) use hetzner or aws, which need only Node.js" >&2
  exit 0
fi
pkgs=(qemu-system-x86 qemu-utils genisoimage debootstrap openssh-client e2fsprogs netcat-openbsd passt)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "install-deps: all present"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "install-deps: run as root (or: sudo $0) to install: ${missing[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
