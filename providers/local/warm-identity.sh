#!/bin/bash
# spuff: the identity of a local VM restored from spuff's saved machine state (docs/adr/0009-local-warm-start.md).
# Installed as /usr/local/lib/spuff/warm-identity, root:root 0755, only on the warm-up VM whose state spuff saves.
#   seal    (spuff runs it with sudo over the warm-up VM's SSH session) start the service below and return at once.
#   serve   (spuff-warm-identity.service) stop sshd, end the login user's processes, remove every per-VM file (host
#           keys, authorized_keys, cloud-init's copies of user-data, the idle watcher's state), say "sealed" on the
#           channel, then wait there for one identity line, apply it, answer "ok" (or "error: ...") and exit.
# The channel is the virtio-serial port org.spuff.identity; only spuff's QEMU process is at its other end. A read
# when nobody is connected there returns at once (end of file): the loop then waits a little and reads again.
set -euo pipefail
port=/dev/virtio-ports/org.spuff.identity
cloud=/var/lib/cloud
# The hostname of the warm-up VM, replaced in /etc/hosts by the VM's own.
warm_hostname=spuff-warm

case "${1:-}" in
  seal)
    systemctl start --no-block spuff-warm-identity.service
    exit 0
    ;;
  serve) ;;
  *)
    echo "usage: warm-identity seal | serve" >&2
    exit 2
    ;;
esac

# shellcheck disable=SC1091
user=$(. /etc/spuff/idle.conf && echo "$SSH_USER")
home=$(getent passwd "$user" | cut -d: -f6)
sleep 1 # the seal command's session closes
systemctl stop ssh.service ssh.socket 2>/dev/null || systemctl stop ssh.service
pkill -KILL -u "$user" 2>/dev/null || true
loginctl terminate-user "$user" 2>/dev/null || true
rm -f /etc/ssh/ssh_host_*
: > "$home/.ssh/authorized_keys"
rm -f /var/lib/spuff/idle.state
for d in "$cloud"/instances/*/; do
  rm -f "$d"user-data.txt "$d"user-data.txt.i "$d"cloud-config.txt "$d"obj.pkl
done
rm -f /run/cloud-init/combined-cloud-config.json /run/cloud-init/instance-data-sensitive.json
sync

exec 3<> "$port"
printf 'sealed\n' >&3

fail() {
  printf 'error: %s\n' "$*" >&3
  echo "warm-identity: $*" >&2
  exit 1
}
b64() { printf %s "$1" | base64 -d; }

line=
while :; do
  if IFS= read -r line <&3; then
    [ -n "$line" ] && break
  else
    sleep 0.1
  fi
done
# One line: "spuff-identity-1 HOSTNAME HOSTKEY HOSTKEY.PUB AUTHORIZED_KEYS IDLE_CONF MACHINE_ID UNIX_TIME INSTANCE_ID
# ENTROPY", every field base64.
read -r magic f_host f_key f_pub f_auth f_idle f_mid f_time f_iid f_rand rest <<< "$line" || true
[ "$magic" = spuff-identity-1 ] && [ -n "$f_rand" ] && [ -z "${rest:-}" ] || fail "not an identity line"
hn=$(b64 "$f_host") mid=$(b64 "$f_mid") now=$(b64 "$f_time") iid=$(b64 "$f_iid")
[[ "$hn" =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]] || fail "bad hostname"
[[ "$mid" =~ ^[0-9a-f]{32}$ ]] || fail "bad machine-id"
[[ "$now" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "bad time"
[[ "$iid" =~ ^[A-Za-z0-9-]{1,128}$ ]] || fail "bad instance-id"

# Fresh randomness first: every VM restored from this state starts with the same kernel RNG state. Mix spuff's bytes
# in and reseed the kernel's generator at once (RNDRESEEDCRNG), before anything here makes a key.
b64 "$f_rand" > /dev/urandom
perl -e 'open(my $f, ">", "/dev/urandom") or die "$!\n"; ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!\n"' || fail "cannot reseed the kernel RNG"
date -u -s "@$now" > /dev/null || fail "cannot set the clock"
old_mid=$(cat /etc/machine-id)
printf '%s\n' "$mid" > /etc/machine-id
hostname "$hn"
printf '%s\n' "$hn" > /etc/hostname
sed -i "s/\b$warm_hostname\b/$hn/g" /etc/hosts

# cloud-init's instance becomes this VM's (the instance-id in its seed), so a later cold boot (`spuff start`) is not a
# new instance and does not run the per-instance modules again.
old=$(cat "$cloud/data/instance-id")
if [ "$old" != "$iid" ]; then
  mv "$cloud/instances/$old" "$cloud/instances/$iid"
  ln -sfn "$cloud/instances/$iid" "$cloud/instance"
  printf '%s\n' "$iid" > "$cloud/data/instance-id"
  [ -f /run/cloud-init/.instance-id ] && printf '%s\n' "$iid" > /run/cloud-init/.instance-id
fi

umask 077
b64 "$f_auth" > "$home/.ssh/authorized_keys"
chown "$user:" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
umask 022
b64 "$f_idle" > /etc/spuff/idle.conf.tmp && mv /etc/spuff/idle.conf.tmp /etc/spuff/idle.conf
rm -f /var/lib/spuff/idle.state
# The idle watcher's boot grace counts from now, not from the warm-up's boot.
mkdir -p /run/spuff
date +%s > /run/spuff/started-at
chmod 0644 /run/spuff/started-at
umask 077
key=/etc/ssh/ssh_host_ed25519_key
b64 "$f_key" > "$key"
b64 "$f_pub" > "$key.pub"
chmod 0644 "$key.pub"
[ "$(ssh-keygen -y -f "$key" | cut -d' ' -f1,2)" = "$(cut -d' ' -f1,2 "$key.pub")" ] || fail "the host key halves differ"
systemctl start ssh.service || fail "sshd did not start"
printf 'ok\n' >&3
# The journal is kept per machine-id: journald starts a new one under the new id; the warm-up's goes.
systemctl restart systemd-journald
if [[ "$old_mid" =~ ^[0-9a-f]{32}$ ]] && [ "$old_mid" != "$mid" ]; then rm -rf "/var/log/journal/$old_mid" "/run/log/journal/$old_mid"; fi
