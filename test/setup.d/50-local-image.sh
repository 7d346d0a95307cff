#!/usr/bin/env bash
# QEMU and the local base image for the end-to-end test. The image is built once with debootstrap (it needs the
# Debian mirror, so it happens here, before the tests enter their network namespace) and cached by recipe hash.
set -euo pipefail
apt_install qemu-system-x86 qemu-utils genisoimage debootstrap e2fsprogs netcat-openbsd
recipe=providers/local/build-image.sh
cache=${SPUFF_CACHE_DIR:-$HOME/.cache/spuff}
# The release the e2e tests boot: the default of local.image (src/config/defaults.ts).
release=debian-13
out="$cache/images/$release-$(sha256sum "$recipe" | cut -c1-12)"
if [ -f "$out/disk.qcow2" ]; then echo "local image: cached at $out" >&2; exit 0; fi
start=$(date +%s)
bash "$recipe" "$release" "$out"
echo "local image: $release built in $(( $(date +%s) - start )) s at $out" >&2
