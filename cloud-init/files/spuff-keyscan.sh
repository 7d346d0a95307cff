#!/bin/bash
# spuff: pins git hosts that were configured without host_keys (runcmd, as root, at first boot).
# Each line of the config: HOST<TAB>PORT<TAB>ADDRESS<TAB>FP[,FP...]. The host's keys are scanned at ADDRESS:PORT and only
# those whose SHA256 fingerprint is listed are added to the known_hosts file. FP "-" means no fingerprint was
# configured: every scanned key is kept (trust on first use; spuff warned about it when it created the VM).
# Keys are stored under HOST (and [HOST]:PORT when PORT is not 22): ~/.ssh/config gives these hosts HostKeyAlias HOST.
# Usage: spuff-keyscan [CONF [KNOWN_HOSTS]]. Exit status 1 if a host with fingerprints ended up with no key.
set -u
conf=${1:-/etc/spuff/keyscan.conf}
out=${2:-/etc/ssh/ssh_known_hosts}
attempts=${SPUFF_KEYSCAN_ATTEMPTS:-5}
status=0
while IFS=$'\t' read -r host port address fps; do
  [ -n "${host:-}" ] || continue
  names=$host
  [ "$port" = 22 ] || names="$host,[$host]:$port"
  scanned=""
  for ((i = 1; i <= attempts; i++)); do
    scanned=$(timeout 60 ssh-keyscan -T 10 -p "$port" -- "$address" 2>/dev/null | grep -v "^#") || true
    [ -n "$scanned" ] && break
    [ "$i" -lt "$attempts" ] && sleep 3
  done
  kept=0
  while read -r _ type key; do
    [ -n "${key:-}" ] || continue
    fp=$(printf '%s %s\n' "$type" "$key" | ssh-keygen -lf - 2>/dev/null | awk '{print $2}')
    [ -n "$fp" ] || continue
    if [ "$fps" = "-" ] || [[ ",$fps," == *",$fp,"* ]]; then
      printf '%s %s %s\n' "$names" "$type" "$key" >> "$out"
      echo "spuff-keyscan: $host: pinned $type $fp"
      kept=$((kept + 1))
    else
      echo "spuff-keyscan: $host: dropping $type key $fp (not a configured fingerprint)" >&2
    fi
  done <<< "$scanned"
  if [ "$kept" = 0 ] && [ "$fps" = "-" ]; then
    echo "spuff-keyscan: $host: not reachable at $address port $port now; its key will be trusted at the first connection (accept-new)" >&2
  elif [ "$kept" = 0 ]; then
    echo "spuff-keyscan: $host: no key matched (scanned $address port $port); git over SSH to $host will be refused" >&2
    status=1
  fi
done < "$conf"
exit $status
