#!/usr/bin/env bash
# passt (with its qrap helper): the local provider's outbound network (`local.network: nat`) without handing the VM
# this machine's loopback; the e2e network test boots a VM with it.
set -euo pipefail
apt_install passt
