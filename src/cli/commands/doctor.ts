import type { Command } from "commander";
import { hostAlias, type VmRecord } from "../../core/state.js";
import { table } from "../../core/view.js";
import type { Check } from "../../ssh/doctor.js";
import type { App } from "../app.js";

/**
 * Plain OpenSSH's path to the VM (`ssh spuff-NAME`, scp, rsync, VS Code): whether the guard daemon can serve the VM, and
 * whether OpenSSH, with the user's own config, forwards the guard's socket (not the raw agent, not nothing).
 */
async function openSshChecks(app: App, record: VmRecord, forward: boolean): Promise<Check[]> {
  const guardCheck = "guard for plain ssh";
  const sshCheck = `ssh ${hostAlias(record.name)}`;
  if (!forward) {
    return [
      { check: guardCheck, ok: true, detail: "not used: no agent is forwarded (--no-agent or ssh.forward_agent: false)" },
      { check: sshCheck, ok: true, detail: "skipped: no agent is forwarded" },
    ];
  }
  const { ensureGuard, userSshConfig } = await import("../../core/session.js");
  const checks: Check[] = [];
  let socket: string | undefined;
  try {
    const g = await ensureGuard(app, record.name);
    if (g) {
      socket = g.socket;
      checks.push({ check: guardCheck, ok: true, detail: `daemon (pid ${g.pid}) serves ${g.socket}, guarding ${g.agent.path}` });
    } else checks.push({ check: guardCheck, ok: true, detail: "not used: ssh.forward_agent is false" });
  } catch (err) {
    const e = err as Error & { hints?: string[] };
    checks.push({
      check: guardCheck,
      ok: false,
      detail: `cannot serve, so plain ssh forwards no agent: ${e.message}`,
      hint: e.hints?.[0] ?? "run `spuff guard ensure NAME` to see the error",
    });
  }
  const { resolveOpenSsh } = await import("../../ssh/openssh-config.js");
  const user = userSshConfig(app.io.env);
  const alias = hostAlias(record.name);
  // Asked as OpenSSH itself would be: this also runs the config's `spuff guard ensure`, as a real `ssh` does.
  const r = await resolveOpenSsh(alias, app.io.env, { configFile: user.explicit ? user.file : undefined, resolving: false });
  const fa = r.options?.get("forwardagent");
  if (r.error !== undefined) checks.push({ check: sshCheck, ok: false, detail: r.error });
  else if (r.options.get("hostname") === alias) {
    checks.push({ check: sshCheck, ok: true, detail: `not set up (${user.file} does not include spuff's config); \`spuff ssh-config --install\` adds it` });
  } else if (socket && fa === socket) checks.push({ check: sshCheck, ok: true, detail: `forwards the guard's socket ${socket}` });
  else if (fa === "no") {
    checks.push({
      check: sshCheck,
      ok: socket === undefined,
      detail: "forwards no agent",
      hint: socket === undefined ? undefined : `the config's \`spuff guard ensure ${record.name}\` failed when OpenSSH ran it: \`ssh -v ${alias} true\` shows its message; \`spuff ssh-config\` rewrites the config`,
    });
  } else {
    checks.push({
      check: sshCheck,
      ok: false,
      detail: `forwards your agent without the guard (forwardagent ${fa})`,
      hint: `spuff's config must be read before any other ForwardAgent for ${alias}: run \`spuff ssh-config\`, and keep its Include line at the top of ${user.file}`,
    });
  }
  return checks;
}

export function register(program: Command, app: App): void {
  program
    .command("doctor [name]")
    .description("check the agent, the VM's host key, agent forwarding, git logins from the VM and plain ssh's guard, with a fix per failure")
    .option("--no-agent", "check without forwarding the agent")
    .option("--git-host <host>", "git host to test a login to (repeatable; default: git_hosts from the config, else github.com)", (v: string, acc?: string[]) => [...(acc ?? []), v])
    .addHelpText(
      "after",
      `
Checks, in order: the local agent (which one and why: ssh.agent_socket, the IdentityAgent OpenSSH resolves for
spuff-NAME, or SSH_AUTH_SOCK; socket, permissions, keys), that the VM answers with the host key pinned when it was
created, that the forwarded agent is visible on the VM (\`ssh-add -l\` there), for each git host an \`ssh -T git@HOST\`
login from the VM, that the guard daemon serves the VM for plain OpenSSH, and that \`ssh spuff-NAME\` forwards the
guard's socket. Exit code 0 when everything passed, 2 otherwise.

Examples:
  $ spuff doctor
  $ spuff doctor api --git-host gitlab.com
  $ spuff doctor api --json`,
    )
    .action(async (name: string | undefined, opts: { agent: boolean; gitHost?: string[] }) => {
      const { guardFor, resolveRecord, vmTarget } = await import("../../core/session.js");
      const record = resolveRecord(app.state(), name);
      const config = app.config();
      const gitHosts = opts.gitHost?.length ? opts.gitHost : config.git_hosts.length ? config.git_hosts.map((h) => h.host) : ["github.com"];
      const { doctor } = await import("../../ssh/doctor.js");
      const forward = opts.agent && config.ssh.forward_agent;
      const checks = await app.interruptible(async (signal) => [
        ...(await doctor({ target: vmTarget(app.state(), record), agent: forward ? () => guardFor(app, record) : undefined, gitHosts, signal })),
        ...(await openSshChecks(app, record, forward)),
      ]);
      const failed = checks.filter((c) => !c.ok);
      if (app.json) app.printJson(checks);
      else {
        app.out(table(["CHECK", "RESULT", "DETAIL"], checks.map((c) => [c.check, c.ok ? "ok" : "FAIL", c.detail])));
        for (const c of failed) if (c.hint) app.out(`hint (${c.check}): ${c.hint}`);
      }
      if (failed.length) {
        // The table (or JSON) already said everything; only the exit code is left to set.
        app.info(`spuff: ${failed.length} of ${checks.length} checks failed on ${record.name}`);
        process.exitCode = 2;
      }
    });
}
