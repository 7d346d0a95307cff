import { PassThrough } from "node:stream";
import type { UserError } from "../core/errors.js";
import { type AgentPolicy, refusalHint, type SignDecision } from "./agent.js";
import { connect, fingerprintOfLine, HostKeyMismatch, type VmTarget } from "./connect.js";
import { runSession } from "./session.js";

/** One line of `spuff doctor`: what was checked, whether it passed, what was seen, and how to fix a failure. */
export interface Check {
  check: string;
  ok: boolean;
  detail: string;
  hint?: string;
}

export interface DoctorInput {
  target: VmTarget;
  /** The forwarded agent; a function so its preflight failure becomes a failed check, not an exception. */
  agent?: () => Promise<{ socket: string; source?: string; policy: AgentPolicy }>;
  gitHosts: string[];
  signal?: AbortSignal;
}

function skipped(check: string, why: string): Check {
  return { check, ok: false, detail: `skipped: ${why}` };
}

/** Runs a command on the VM with the guarded agent forwarded and collects its output. */
async function onVm(target: VmTarget, agent: { socket: string; policy: AgentPolicy } | undefined, command: string) {
  let stdout = "";
  let stderr = "";
  const stdin = new PassThrough();
  stdin.end();
  const code = await runSession({
    target,
    command,
    pty: false,
    agent,
    forwards: [],
    stdin,
    stdout: { write: (d) => (stdout += d.toString()) },
    stderr: { write: (d) => (stderr += d.toString()) },
    env: {},
    status: () => {},
  });
  return { code, stdout, stderr };
}

/** What a git host's answer to `ssh -T git@HOST` means, with the fix for each known failure. */
export function classifyGitLogin(host: string, code: number, output: string, keys: string[]): Check {
  const check = `git login to ${host}`;
  const text = output.trim();
  const first = text.split("\n").find((l) => l.trim()) ?? `exit ${code}`;
  if (/successfully authenticated|welcome to gitlab|logged in as|authenticated via|you can use git|shell access is not|hi .+!/i.test(text)) {
    return { check, ok: true, detail: first };
  }
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known/i.test(text)) {
    return { check, ok: false, detail: first, hint: `${host}'s host key is not pinned on the VM: add it under git_hosts (host_keys or fingerprints) in your config and recreate the VM` };
  }
  if (/agent admitted failure to sign|agent refused operation|refused a signature/i.test(text)) {
    return { check, ok: false, detail: first, hint: "your agent refused to sign: unlock it (1Password/ssh-add -c confirmation), or check ssh.sign_policy and ssh.allowed_keys" };
  }
  if (/Permission denied \(publickey/i.test(text)) {
    return {
      check,
      ok: false,
      detail: first,
      hint: keys.length
        ? `${host} accepted none of the offered keys (${keys.join(", ")}): add one of them to your ${host} account, or allow another with ssh.allowed_keys`
        : `no key was offered: the forwarded agent shows no keys (check ssh.allowed_keys), or run without --no-agent`,
    };
  }
  if (/Could not resolve hostname|Network is unreachable|Connection timed out|Connection refused|No route to host/i.test(text)) {
    return { check, ok: false, detail: first, hint: `the VM cannot reach ${host}: check its network, or the host name/address/port under git_hosts` };
  }
  return { check, ok: code === 0, detail: first };
}

export async function doctor(input: DoctorInput): Promise<Check[]> {
  const checks: Check[] = [];
  const { target } = input;

  let agent: { socket: string; source?: string; policy: AgentPolicy } | undefined;
  if (!input.agent) checks.push({ check: "local agent", ok: true, detail: "not forwarded (--no-agent or ssh.forward_agent: false)" });
  else {
    try {
      agent = await input.agent();
      checks.push({ check: "local agent", ok: true, detail: `${agent.socket} answers and holds keys${agent.source ? `; chosen from ${agent.source}` : ""}` });
    } catch (err) {
      const e = err as UserError;
      checks.push({ check: "local agent", ok: false, detail: e.message, hint: e.hints?.[0] });
    }
  }

  try {
    const client = await connect(target, { readyTimeout: 15_000 }, input.signal);
    client.end();
    checks.push({ check: "VM reachable", ok: true, detail: `${target.user}@${target.host}:${target.port}` });
    checks.push({ check: "VM host key", ok: true, detail: `matches the key pinned at creation (${fingerprintOfLine(target.hostKey)})` });
  } catch (err) {
    if (err instanceof HostKeyMismatch) {
      checks.push({ check: "VM reachable", ok: true, detail: `${target.host}:${target.port}` });
      checks.push({ check: "VM host key", ok: false, detail: err.message, hint: err.hints[0] });
    } else {
      checks.push({ check: "VM reachable", ok: false, detail: (err as Error).message, hint: `check \`spuff status ${target.name}\`; a VM that powered off boots again with \`spuff start ${target.name}\` (local, Hetzner)` });
      checks.push(skipped("VM host key", "the VM is not reachable"));
    }
    checks.push(skipped("agent on the VM", "no verified connection"));
    for (const h of input.gitHosts) checks.push(skipped(`git login to ${h}`, "no verified connection"));
    return checks;
  }

  let keys: string[] = [];
  if (!agent) checks.push(skipped("agent on the VM", "no agent is forwarded"));
  else {
    const r = await onVm(target, agent, "ssh-add -l");
    keys = r.stdout.split("\n").map((l) => l.split(" ")[1]).filter((f) => f?.startsWith("SHA256:"));
    if (r.code === 0) checks.push({ check: "agent on the VM", ok: true, detail: `${keys.length} key(s) visible: ${keys.join(", ")}` });
    else if (r.code === 1) {
      checks.push({ check: "agent on the VM", ok: false, detail: "forwarded, but it shows no keys", hint: "ssh.allowed_keys matches none of your agent's keys: list them with `ssh-add -l` and fix the config" });
    } else {
      checks.push({
        check: "agent on the VM",
        ok: false,
        detail: (r.stderr || r.stdout).trim().split("\n")[0] || `ssh-add exit ${r.code}`,
        hint: "the VM's sshd refused agent forwarding: check AllowAgentForwarding in /etc/ssh/sshd_config.d on the VM",
      });
    }
  }

  for (const host of input.gitHosts) {
    // When the guard refused a signature during the login, its reason is the explanation (e.g. a client without
    // session-bind under git-only), not whatever the VM's ssh made of the refusal.
    const refused: SignDecision[] = [];
    const onDecision = (d: SignDecision) => {
      if (!d.allowed) refused.push(d);
      agent?.policy.onDecision?.(d);
    };
    const watched = agent && { ...agent, policy: { ...agent.policy, onDecision } };
    const r = await onVm(target, watched, `ssh -T -o BatchMode=yes -o ConnectTimeout=10 git@${host} 2>&1`);
    const c = classifyGitLogin(host, r.code, r.stdout + r.stderr, keys);
    checks.push(!c.ok && refused[0] ? { ...c, hint: refusalHint(refused[0]) } : c);
  }
  return checks;
}
