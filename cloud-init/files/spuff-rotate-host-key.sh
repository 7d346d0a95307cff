#!/bin/bash
# spuff: replaces this VM's SSH host key after first contact (docs/adr/0008-host-key-rotation.md).
# The key cloud-init installed came in user-data, which the metadata service keeps serving to every process on the VM
# (and the cloud API to whoever may read it), so spuff has the VM make a new one. spuff runs each step as root
# (`sudo -n`) over a connection that checked the pinned key; stdout is only what spuff reads.
#   prepare      make a new ed25519 key next to the current one (KEY.next); print its public half, one line; then
#                run the steps stdin names, a line each ("commit PUB", "finish"), until its end: one sudo in all.
#   commit PUB   PUB is what prepare printed: install it (the old one stays as KEY.old), reload sshd (open connections
#                stay up); if sshd does not reload, put the old key back and fail. Prints PUB.
#   finish       (once a fresh connection saw the new key) remove KEY.old and cloud-init's copies of user-data.
#   abort        put KEY.old back if a commit left it, and reload sshd. Prints nothing.
# The SPUFF_* variables exist for the test stand-in VM; sudo resets the environment, so on a VM the defaults apply.
set -euo pipefail
umask 077
key=${SPUFF_HOST_KEY:-/etc/ssh/ssh_host_ed25519_key}
cloud=${SPUFF_CLOUD_DIR:-/var/lib/cloud}
run=${SPUFF_CLOUD_RUN_DIR:-/run/cloud-init}

die() {
  echo "spuff-rotate-host-key: $*" >&2
  exit 1
}

public_of() { cut -d' ' -f1,2 "$1"; }

reload_sshd() {
  if [ -n "${SPUFF_SSHD_RELOAD_REQUEST:-}" ]; then
    # The stand-in's supervisor sends sshd its SIGHUP and removes the request (what systemctl reload does here).
    : > "$SPUFF_SSHD_RELOAD_REQUEST"
    for _ in $(seq 1000); do [ -e "$SPUFF_SSHD_RELOAD_REQUEST" ] || return 0; sleep 0.01; done
    return 1
  fi
  # Debian and Ubuntu: ExecReload checks the config (sshd -t), then sends SIGHUP; sshd re-executes itself with the
  # new key and leaves the processes serving open connections alone.
  systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service
}

restore_old() {
  mv -f "$key.old" "$key"
  ssh-keygen -y -f "$key" > "$key.pub.tmp" && chmod 0644 "$key.pub.tmp" && mv -f "$key.pub.tmp" "$key.pub"
}

prepare() {
  rm -f "$key.next" "$key.next.pub"
  ssh-keygen -q -t ed25519 -N '' -C '' -f "$key.next" < /dev/null > /dev/null
  public_of "$key.next.pub"
}

commit() {
  [ -f "$key.next" ] && [ -f "$key.next.pub" ] || die "no prepared key ($key.next): run prepare first"
  [ "$(public_of "$key.next.pub")" = "$1" ] || die "the prepared key is not the one given"
  ln -f "$key" "$key.old"
  chmod 0644 "$key.next.pub"
  mv -f "$key.next" "$key"
  mv -f "$key.next.pub" "$key.pub"
  if ! reload_sshd; then
    restore_old
    reload_sshd || true
    die "sshd did not reload with the new key; the old key is back in place"
  fi
  public_of "$key.pub"
}

finish() {
  rm -f "$key.old"
  # cloud-init's copies of the user-data it ran; its semaphores (sem/) stay, so a reboot does not install the old key.
  for d in "$cloud"/instances/*/; do
    [ -d "$d" ] || continue
    rm -f "$d"user-data.txt "$d"user-data.txt.i "$d"cloud-config.txt "$d"obj.pkl
  done
  # cloud-init 24+ keeps the merged config (host key included) in /run too.
  rm -f "$run"/combined-cloud-config.json "$run"/instance-data-sensitive.json
}

abort() {
  rm -f "$key.next" "$key.next.pub"
  if [ -f "$key.old" ]; then
    restore_old
    reload_sshd
  fi
}

case "${1:-}" in
  prepare)
    [ $# = 1 ] || die "usage: prepare"
    prepare
    # The end of stdin (spuff done or gone) leaves things as they are.
    while IFS= read -r step; do
      case "$step" in
        "commit "*) commit "${step#commit }" ;;
        finish) finish; exit 0 ;;
        *) die "unknown step on stdin: expected commit PUBLIC-KEY or finish" ;;
      esac
    done
    ;;
  commit)
    [ $# = 2 ] || die "usage: commit PUBLIC-KEY"
    commit "$2"
    ;;
  finish | abort)
    [ $# = 1 ] || die "usage: $1"
    "$1"
    ;;
  *)
    die "usage: prepare | commit PUBLIC-KEY | finish | abort"
    ;;
esac
