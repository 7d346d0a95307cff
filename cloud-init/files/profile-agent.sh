# spuff (/etc/profile.d/spuff-agent.sh): login shells over SSH and in tmux use the stable agent link that ~/.ssh/rc
# points at the newest connection's forwarded agent, so long-lived tmux panes keep working after a reconnect.
if [ -n "${SSH_CONNECTION:-}${TMUX:-}" ] && [ -S "$HOME/.ssh/agent.sock" ]; then
  SSH_AUTH_SOCK="$HOME/.ssh/agent.sock"
  export SSH_AUTH_SOCK
fi
# Clone the configured dotfiles and repositories once, at the first login that has a forwarded agent.
if [ -x /usr/local/bin/spuff-first-login ] && [ -n "${SSH_AUTH_SOCK:-}" ] \
  && [ ! -e "${XDG_STATE_HOME:-$HOME/.local/state}/spuff/first-login-done" ]; then
  /usr/local/bin/spuff-first-login || true
fi
