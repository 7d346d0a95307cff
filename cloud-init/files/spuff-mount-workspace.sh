#!/bin/bash
# spuff: mount-workspace USER DIR DEVICE... (runcmd, as root): mounts the workspace volume at DIR (~USER/work), owned
# by USER. DEVICEs are its paths by id; the first that appears wins (a cloud volume may be attached after boot). A disk
# without any signature is formatted ext4; one with a filesystem is never formatted. fstab mounts it (by UUID, nofail)
# at later boots.
set -eu
user=$1 dir=$2
shift 2
wait=${SPUFF_WORKSPACE_WAIT:-120} fstab=${SPUFF_FSTAB:-/etc/fstab}
dev=
for ((i = 0; ; i++)); do
  for d in "$@"; do
    if [ -b "$d" ]; then dev=$(readlink -f -- "$d"); break 2; fi
  done
  [ "$i" -lt "$wait" ] || { echo "spuff: the workspace volume did not appear within $wait s (looked for $*)" >&2; exit 1; }
  sleep 1
done
probe() { blkid -p -o value -s "$1" -- "$dev"; }
rc=0
type=$(probe TYPE) || rc=$?
if [ "$rc" = 2 ]; then
  # blkid found no signature at all: an empty volume.
  echo "spuff: formatting the new workspace volume $dev (ext4)"
  mkfs.ext4 -q -m 0 -- "$dev" </dev/null
  type=$(probe TYPE)
elif [ "$rc" != 0 ] || [ -z "$type" ] || [ "$(probe USAGE)" != filesystem ]; then
  echo "spuff: $dev holds something other than one filesystem ($(blkid -p -o export -- "$dev" 2>&1 | tr '\n' ' ')); not touching it" >&2
  exit 1
fi
uuid=$(probe UUID)
mkdir -p -- "$dir"
grep -q "^UUID=$uuid " "$fstab" 2>/dev/null || echo "UUID=$uuid $dir $type defaults,nofail 0 2" >>"$fstab"
mountpoint -q -- "$dir" || mount -t "$type" -- "$dev" "$dir"
chown -- "$user:" "$dir"
echo "spuff: workspace $dev ($type, UUID $uuid) mounted at $dir"
