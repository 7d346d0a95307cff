import type { App } from "../cli/app.js";
import { guardedAgentFor, resolveRecord, vmTarget } from "../cli/commands/ssh.js";

/**
 * What `spuff ssh NAME` runs for an interactive shell: the pinned host key, the per-VM key, the guarded agent (when
 * ssh.forward_agent) and tmux (when ssh.tmux), reconnecting a dropped tmux shell. Returns the shell's exit code.
 */
export async function openShell(app: App, name: string): Promise<number> {
  const { runSessionWithReconnect } = await import("../ssh/session.js");
  const record = resolveRecord(app, name);
  const config = app.config();
  const target = vmTarget(app, record);
  const agent = config.ssh.forward_agent ? await guardedAgentFor(app, record) : undefined;
  const remote = config.ssh.tmux ? "tmux new -A -s spuff" : undefined;
  const io = app.io as unknown as Parameters<typeof runSessionWithReconnect>[0];
  return runSessionWithReconnect({
    target,
    command: remote,
    pty: true,
    agent,
    forwards: [],
    stdin: io.stdin,
    stdout: io.stdout,
    stderr: io.stderr,
    env: app.io.env,
    status: (l) => app.info(l),
    reconnect: remote !== undefined,
  });
}
