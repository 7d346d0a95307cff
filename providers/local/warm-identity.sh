#!/bin/bash
# spuff: the identity of a local VM restored from spuff's saved machine state (docs/adr/0009-local-warm-start.md).
# Installed as /usr/local/lib/spuff/warm-identity, root:root 0755, only on the warm-up VM whose state spuff saves.
#   seal    (spuff runs it with sudo over the warm-up VM's SSH session) start the service below and return at once.
#   serve   (spuff-warm-identity.service) stop sshd, end the login user's processes, remove every per-VM file (host
#           keys, authorized_keys, cloud-init's copies of user-data, the idle watcher's state), say "sealed" on the
#           channel, then wait there for one identity line, apply it, make this VM's host key, answer "ok KEY.PUB"
#           (or "error: ...") and exit.
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
# Until the next boot (/run): sshd starts without its config test first, which under TCG takes a second of the
# restored VM's identity phase. The config is the one cloud-init wrote and sshd started with in this warm-up VM; a
# broken one still fails `systemctl start ssh` below. `systemctl reload ssh` still tests it.
mkdir -p /run/systemd/system/ssh.service.d
printf '[Service]\nExecStartPre=\n' > /run/systemd/system/ssh.service.d/spuff-warm.conf
systemctl daemon-reload
# What the wait for the identity line sleeps on: a read with a timeout on a FIFO nobody writes to (no `sleep` to start).
rm -f /run/spuff-warm-identity.fifo
mkfifo -m 0600 /run/spuff-warm-identity.fifo
exec 4<> /run/spuff-warm-identity.fifo
sync

exec 3<> "$port"
printf 'sealed\n' >&3

fail() {
  printf 'error: %s\n' "$*" >&3
  echo "warm-identity: $*" >&2
  exit 1
}

line=
while :; do
  if IFS= read -r line <&3; then
    [ -n "$line" ] && break
  else
    read -r -t 0.1 -u 4 || true
  fi
done
# One line: "spuff-identity-2 HOSTNAME MACHINE_ID UNIX_TIME INSTANCE_ID AUTHORIZED_KEYS IDLE_CONF ENTROPY", the last three
# base64, the others plain tokens checked below (every command started here costs a visible fraction of a second under
# TCG). No host key: this VM makes its own below.
read -r magic hn mid now iid f_auth f_idle f_rand rest <<< "$line" || true
[ "$magic" = spuff-identity-2 ] && [ -n "$f_rand" ] && [ -z "${rest:-}" ] || fail "not an identity line"
[[ "$hn" =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]] || fail "bad hostname"
[[ "$mid" =~ ^[0-9a-f]{32}$ ]] || fail "bad machine-id"
[[ "$now" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "bad time"
[[ "$iid" =~ ^[A-Za-z0-9-]{1,128}$ ]] || fail "bad instance-id"

# Fresh randomness first: every VM restored from this state starts with the same kernel RNG state. Mix spuff's bytes
# in and reseed the kernel's generator at once (RNDRESEEDCRNG), before anything here makes a key. The same perl (one
# process instead of eight commands) writes the login keys and idle.conf, clears the idle watcher's state, and makes
# cloud-init's instance this VM's: the instance id in its seed, so a later cold boot (`spuff start`) is not a new
# instance and does not run the per-instance modules (ssh keys among them) again.
perl -MMIME::Base64 -e '
  my ($rand, $auth, $idle, $keys, $iid, $cloud) = @ARGV;
  my $d = decode_base64($rand);
  length($d) == 64 or die "bad entropy\n";
  open(my $u, ">", "/dev/urandom") or die "/dev/urandom: $!\n";
  syswrite($u, $d) == 64 or die "/dev/urandom: $!\n";
  ioctl($u, 0x5207, 0) or die "RNDRESEEDCRNG: $!\n";
  close($u);
  # authorized_keys exists (emptied when the state was saved): truncated and written, it keeps its owner and mode.
  -f $keys && !-l $keys or die "$keys is missing\n";
  open(my $k, "+<", $keys) or die "$keys: $!\n";
  truncate($k, 0); print {$k} decode_base64($auth); close($k) or die "$keys: $!\n";
  open(my $i, ">", "/etc/spuff/idle.conf.tmp") or die "idle.conf: $!\n";
  chmod(0644, $i); print {$i} decode_base64($idle); close($i) or die "idle.conf: $!\n";
  rename("/etc/spuff/idle.conf.tmp", "/etc/spuff/idle.conf") or die "idle.conf: $!\n";
  unlink("/var/lib/spuff/idle.state");
  open(my $c, "<", "$cloud/data/instance-id") or die "instance-id: $!\n";
  chomp(my $old = <$c> // ""); close($c);
  exit 0 if $old eq $iid;
  rename("$cloud/instances/$old", "$cloud/instances/$iid") or die "instance $old: $!\n";
  unlink("$cloud/instance.new"); symlink("$cloud/instances/$iid", "$cloud/instance.new") or die "instance link: $!\n";
  rename("$cloud/instance.new", "$cloud/instance") or die "instance link: $!\n";
  for my $f ("$cloud/data/instance-id", grep { -f } "/run/cloud-init/.instance-id") {
    open(my $o, ">", $f) or die "$f: $!\n"; print {$o} "$iid\n"; close($o) or die "$f: $!\n";
  }
' "$f_rand" "$f_auth" "$f_idle" "$home/.ssh/authorized_keys" "$iid" "$cloud" 2> /run/spuff-warm-identity.err ||
  fail "$(tr -cd '[:print:]' < /run/spuff-warm-identity.err)"
# This VM's host key, made here from the reseeded RNG: its private half never leaves the VM, and no other VM has it.
key=/etc/ssh/ssh_host_ed25519_key
ssh-keygen -q -t ed25519 -N '' -C "root@$hn" -f "$key" < /dev/null > /dev/null || fail "ssh-keygen failed"
read -r key_type key_blob _ < "$key.pub"
date -u -s "@$now" > /dev/null || fail "cannot set the clock"
read -r old_mid < /etc/machine-id || true
printf '%s\n' "$mid" > /etc/machine-id
# The journal is kept per machine-id: journald starts a new one under the new id (its restart runs meanwhile).
systemctl restart --no-block systemd-journald
printf '%s' "$hn" > /proc/sys/kernel/hostname
printf '%s\n' "$hn" > /etc/hostname
mapfile -t hosts < /etc/hosts
printf '%s\n' "${hosts[@]//$warm_hostname/$hn}" > /etc/hosts

# The idle watcher's boot grace counts from now, not from the warm-up's boot.
[ -d /run/spuff ] || mkdir -p /run/spuff
printf '%(%s)T\n' -1 > /run/spuff/started-at
systemctl start ssh.service || fail "sshd did not start"
printf 'ok %s %s\n' "$key_type" "$key_blob" >&3
# The warm-up's journal goes once journald runs under the new machine-id (`start` waits for the queued restart).
systemctl start systemd-journald
if [[ "$old_mid" =~ ^[0-9a-f]{32}$ ]] && [ "$old_mid" != "$mid" ]; then rm -rf "/var/log/journal/$old_mid" "/run/log/journal/$old_mid"; fi
