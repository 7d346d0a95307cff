#!/usr/bin/env bash
# Base tools: real OpenSSH server/client and agent, tmux (reconnect tests), iproute2 and util-linux for the isolated network namespace.
set -euo pipefail
apt_install openssh-server openssh-client iproute2 util-linux git tmux
mkdir -p /run/sshd
