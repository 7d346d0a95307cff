#!/usr/bin/env bash
# Installs the Debian packages spuff needs to run VMs on this machine (local QEMU provider) and to build its
# base image. Run as root on Debian/Ubuntu. macOS: `brew install qemu cdrtools` (see docs/providers/local.md).
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils genisoimage debootstrap openssh-client e2fsprogs netcat-openbsd)
[ "$(uname -m)" = aarch64 ] && pkgs[0]=qemu-system-arm
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "install-deps: all present"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "install-deps: run as root (or: sudo $0) to install: ${missing[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
