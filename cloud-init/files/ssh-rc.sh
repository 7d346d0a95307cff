#!/bin/sh
# spuff ~/.ssh/rc. sshd runs it with /bin/sh at every login, before the shell or command: it points a stable link
# (~/.ssh/agent.sock) at this connection's forwarded agent, so shells and tmux panes started by an earlier connection
# keep a working agent after a reconnect (they use the link; see /etc/profile.d/spuff-agent.sh and ~/.tmux.conf).
# A stale link is replaced; a login without a forwarded agent leaves a working link alone and removes a dead one.
# POSIX sh only. (With ~/.ssh/rc present sshd does not run xauth; spuff does not forward X11.)
link="${SPUFF_AGENT_LINK:-$HOME/.ssh/agent.sock}"
if [ -n "${SSH_AUTH_SOCK:-}" ] && [ -S "$SSH_AUTH_SOCK" ] && [ "$SSH_AUTH_SOCK" != "$link" ]; then
  mkdir -p "$(dirname "$link")"
  # Make the new link beside the old one and rename it over: a shell using the link never sees it missing.
  ln -sfn "$SSH_AUTH_SOCK" "$link.$$" && mv -Tf "$link.$$" "$link"
elif [ -L "$link" ] && [ ! -S "$link" ]; then
  rm -f "$link"
fi
