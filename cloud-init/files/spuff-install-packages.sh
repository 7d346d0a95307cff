#!/bin/bash
# spuff: installs the listed Debian packages that are missing (runcmd, as root). The package lists are refreshed only
# when something is missing, so a VM whose image already has everything (the local QEMU image)
# boots without touching apt. A failed install is reported but never fails or hangs the boot: every apt step has a
# time limit, and the exit status is 0 so the rest of the boot (sshd, idle watcher, setup) still happens.
set -u
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "${p%%=*}" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "spuff: all packages present: $*"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30 -o DPkg::Lock::Timeout=300)
echo "spuff: installing ${missing[*]}"
if ! timeout 600 apt-get "${apt_opts[@]}" update; then
  echo "spuff: WARNING: apt-get update failed (no network?); trying to install from the cached lists" >&2
fi
if ! timeout 1800 apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"; then
  echo "spuff: WARNING: could not install ${missing[*]}; the VM is usable without them" >&2
fi
exit 0
