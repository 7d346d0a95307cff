#!/bin/bash
# spuff-first-login: clones the configured dotfiles and repositories through the forwarded agent. The agent exists
# only while someone is connected with `spuff ssh`, so this runs at login (from /etc/profile.d/spuff-agent.sh), not at
# boot. Runs once per user: a marker file records success; on failure (no agent, clone refused) the next login retries.
# Lines of the config: KIND<TAB>URL<TAB>INSTALL, KIND "dotfiles" (cloned to ~/.dotfiles, then INSTALL runs there,
# or the first of install.sh, install, bootstrap.sh, bootstrap, setup.sh, setup that is executable) or "repo" (cloned
# to ~/work/NAME, unless it is there: the workspace volume keeps it from an earlier VM).
set -u
conf=${SPUFF_FIRST_LOGIN_CONF:-/etc/spuff/first-login.conf}
state="${XDG_STATE_HOME:-$HOME/.local/state}/spuff"
marker="$state/first-login-done"
[ -e "$marker" ] && exit 0
mkdir -p "$state"
[ -r "$conf" ] || { touch "$marker"; exit 0; }
# One run at a time (several tmux panes may start at once).
exec 9>"$state/first-login.lock"
flock -n 9 || exit 0
[ -e "$marker" ] && exit 0
if ! ssh-add -l >/dev/null 2>&1; then
  echo "spuff: no usable forwarded SSH agent in this session; dotfiles and repositories will be cloned at the next login with one (spuff ssh)" >&2
  exit 0
fi
ok=1
while IFS=$'\t' read -r kind url install; do
  [ -n "${kind:-}" ] || continue
  case "$kind" in
    dotfiles)
      dir="$HOME/.dotfiles"
      if [ ! -d "$dir" ]; then
        echo "spuff: cloning dotfiles $url" >&2
        if ! git clone -q -- "$url" "$dir"; then
          ok=0
          continue
        fi
        if [ -z "${install:-}" ]; then
          for f in install.sh install bootstrap.sh bootstrap setup.sh setup; do
            if [ -f "$dir/$f" ] && [ -x "$dir/$f" ]; then install="./$f"; break; fi
          done
        fi
        if [ -n "${install:-}" ]; then
          echo "spuff: running $install in ~/.dotfiles" >&2
          (cd "$dir" && bash -c "$install") || { echo "spuff: dotfiles install command failed: $install" >&2; ok=0; }
        fi
      fi ;;
    repo)
      name=$(basename "${url%.git}")
      name=${name##*:}
      dir="$HOME/work/$name"
      if [ ! -d "$dir" ]; then
        mkdir -p "$HOME/work"
        echo "spuff: cloning $url into ~/work/$name" >&2
        git clone -q -- "$url" "$dir" || ok=0
      fi ;;
  esac
done < "$conf"
if [ "$ok" = 1 ]; then touch "$marker"; else echo "spuff: some clones failed; they are retried at the next login (or run spuff-first-login)" >&2; fi
exit 0
