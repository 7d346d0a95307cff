#!/usr/bin/env bash
# Local users the tests log in as through real sshd: `git` (a git server) and `spuff-test` (a stand-in VM user).
set -euo pipefail
id git >/dev/null 2>&1 || useradd -m -s /bin/bash git
id spuff-test >/dev/null 2>&1 || useradd -m -s /bin/bash spuff-test
# sshd without PAM refuses accounts whose password is locked ("!"): give them none ("*") instead.
usermod -p '*' git
usermod -p '*' spuff-test
mkdir -p /run/sshd
