#!/usr/bin/env bash
# cloud-init tests: `cloud-init schema` (offline; installing the package does not enable it on this machine),
# genisoimage (NoCloud seeds), and the real tools the on-VM scripts are run with: OpenSSH (ssh, ssh-keyscan,
# ssh-keygen, sshd), git, tmux, dash (/bin/sh, as sshd runs ~/.ssh/rc) and apt.
set -euo pipefail
apt_install cloud-init genisoimage openssh-client openssh-server git tmux dash apt
