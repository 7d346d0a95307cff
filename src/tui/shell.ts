import type { App } from "../cli/app.js";
import { openSession, resolveRecord } from "../core/session.js";

/**
 * What `spuff ssh NAME` runs for an interactive shell (the session service, src/core/session.ts): the pinned host key,
 * the per-VM key, the guarded agent (when ssh.forward_agent) and tmux (when ssh.tmux), reconnecting a dropped tmux
 * shell. Returns the shell's exit code.
 */
export async function openShell(app: App, name: string): Promise<number> {
  const record = resolveRecord(app.state(), name);
  return (await openSession(app, { record })).code;
}
