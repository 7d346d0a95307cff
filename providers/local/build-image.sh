#!/usr/bin/env bash
# Builds spuff's local base image: Debian 13 (trixie) or 12 (bookworm) with cloud-init, OpenSSH, sudo, git and tmux,
# from the Debian package mirror with debootstrap (no download of a prebuilt image), as a qcow2 disk plus kernel and
# initrd for direct kernel boot. Usage: build-image.sh RELEASE OUTDIR [MIRROR], RELEASE debian-13 or debian-12.
# Needs root (debootstrap) and network access to the mirror.
# The output directory name is chosen by the caller from the release and this script's hash, so a changed recipe
# builds a new image.
set -euo pipefail
usage="usage: build-image.sh debian-13|debian-12 OUTDIR [MIRROR]"
release=${1:?$usage}
out=${2:?$usage}
mirror=${3:-}
case "$release" in
  debian-13) suite=trixie ;;
  debian-12) suite=bookworm ;;
  *) echo "build-image: unknown release \"$release\"; $usage" >&2; exit 2 ;;
esac
if [ -z "$mirror" ]; then
  mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
if [ "$(id -u)" != 0 ]; then echo "build-image: debootstrap needs root; run \`sudo spuff image build\`" >&2; exit 3; fi
for tool in debootstrap mke2fs qemu-img; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is missing; install: apt-get install debootstrap e2fsprogs qemu-utils" >&2; exit 3; }
done
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "${out%/}.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
# dbus: since cloud-init 24, `cloud-init status` (which spuff runs as the login user) asks systemd over the system bus;
# without a bus `status` fails and `status --wait` never returns (Debian 13). e2fsprogs: cloud-init's resizefs runs
# resize2fs, and the boot's fsck needs fsck.ext4; Debian 13's minbase no longer has them. Cloud images have both.
echo "build-image: debootstrap $suite ($release) from $mirror" >&2
debootstrap --variant=minbase \
  --include=systemd-sysv,linux-image-cloud-amd64,cloud-init,openssh-server,openssh-client,sudo,git,tmux,curl,ca-certificates,ifupdown,isc-dhcp-client,netbase,iproute2,udev,python3-cffi-backend,procps,less,dbus,e2fsprogs \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
echo "/dev/vda / ext4 defaults 0 1" > "$root/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet dhcp\n' > "$root/etc/network/interfaces"
printf 'datasource_list: [ NoCloud, None ]\n' > "$root/etc/cloud/cloud.cfg.d/90-spuff-datasource.cfg"
# No network inside local VMs: never wait for a time server or for apt.
rm -f "$root/etc/ssh/ssh_host_"*   # cloud-init installs the pinned key at first boot
: > "$root/etc/machine-id"
echo "spuff-base" > "$root/etc/hostname"
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
truncate -s 4G "$work/disk.raw"
mke2fs -q -t ext4 -d "$root" -L spuffroot "$work/disk.raw"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
mkdir -p "$out"
mv "$work/disk.qcow2" "$work/vmlinuz" "$work/initrd.img" "$out/"
printf '%s built %s from %s\n' "$release" "$(date -u +%FT%TZ)" "$mirror" > "$out/IMAGE"
echo "build-image: done: $out" >&2
