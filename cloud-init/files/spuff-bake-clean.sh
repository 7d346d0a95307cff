#!/bin/sh
# spuff image bake (docs/images.md): the last step on the VM before its disk becomes an image, run as root after
# cloud-init finished: `bake-clean USER PACKAGE...`. It checks that every package the bake promises is installed (the
# install step never fails a boot, a bake must), then removes everything that belongs to this one VM, so no VM booted
# from the image shares it: host keys, machine-id, cloud-init's state and logs (the next boot runs cloud-init as a
# first boot again, with that VM's own user-data), the login keys, spuff's per-VM files, logs and shell histories.
# SPUFF_BAKE_ROOT: a directory standing in for / (tests); on a VM it is empty and the system commands run too.
set -eu
R="${SPUFF_BAKE_ROOT:-}"
user="$1"
shift
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "${p%%=*}" 2>/dev/null | grep -q "install ok installed" || missing="$missing ${p%%=*}"
done
if [ -n "$missing" ]; then
  echo "spuff bake: not installed:$missing (see /var/log/cloud-init-output.log)" >&2
  exit 3
fi
if [ -z "$R" ]; then
  # The idle watcher of the bake VM must not power off the VMs booted from the image before their own config lands.
  systemctl disable --now spuff-idle.timer spuff-idle.service >/dev/null 2>&1 || true
  apt-get clean || true
  cloud-init clean --logs --seed
  journalctl --rotate >/dev/null 2>&1 || true
  journalctl --vacuum-time=1s >/dev/null 2>&1 || true
fi
rm -f "$R"/etc/ssh/ssh_host_*
# An empty machine-id makes systemd generate a new one at the next boot (and D-Bus follows it).
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R/var/lib/systemd/random-seed"
rm -rf "$R/etc/spuff" "$R/var/lib/cloud"
for home in "$R/root" "$R/home/$user"; do
  rm -f "$home/.ssh/authorized_keys" "$home/.bash_history" "$home/.lesshst" "$home/.viminfo" "$home/.python_history"
done
if [ -d "$R/var/log" ]; then
  find "$R/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
  find "$R/var/log" -type f -exec truncate -s 0 {} +
  rm -rf "$R"/var/log/journal/*
fi
rm -rf "$R"/tmp/* "$R"/var/tmp/*
sync
echo "spuff bake: cleaned"
