import { spawn } from "node:child_process";
import { appendFileSync, lstatSync, mkdirSync } from "node:fs";
import { homedir } from "node:os";
import { dirname } from "node:path";
import { Duplex } from "node:stream";
import type { ParsedKey } from "ssh2";
import { UserError } from "../core/errors.js";
import { MAX_SESSION_ID, parseSessionBind, parseUserAuth, Reader, verifySshSignature } from "./agent-bind.js";
import { type GitHostPin, shippedGitHosts } from "./agent-hosts.js";
import { AGENT_MAX_MESSAGE, frame, RealAgentConnection } from "./agent-upstream.js";
import { fingerprintOf, fingerprintOfLine } from "./connect.js";
import { BaseAgent, OpenSSHAgent } from "./ssh2.js";

// SSH agent protocol message numbers (draft-miller-ssh-agent, OpenSSH's PROTOCOL.agent).
const AGENT_FAILURE = 5;
const AGENT_SUCCESS = 6;
const AGENTC_REQUEST_IDENTITIES = 11;
const AGENT_IDENTITIES_ANSWER = 12;
const AGENTC_SIGN_REQUEST = 13;
const AGENT_SIGN_RESPONSE = 14;
const AGENTC_EXTENSION = 27;
/** Bindings one agent connection may record (ssh-agent.c's AGENT_MAX_SESSION_IDS). */
const MAX_BINDS = 16;

const FAILURE = Buffer.from([AGENT_FAILURE]);
const SUCCESS = Buffer.from([AGENT_SUCCESS]);

export { AGENT_MAX_MESSAGE } from "./agent-upstream.js";
export type { GitHostPin } from "./agent-hosts.js";

export interface AgentPolicy {
  /** Fingerprints ("SHA256:...") or key comments the VM may see; empty = all. */
  allowedKeys: string[];
  /**
   * git-only: sign only SSH logins that the client bound (session-bind@openssh.com) to a pinned git host's key, for the
   * user that host expects. any: sign everything (a bound login must still be for the bound session).
   */
  signPolicy: "git-only" | "any";
  /** Where each sign request is logged (JSON lines). */
  logFile: string;
  vm: string;
  /** The git hosts git-only signs for, with their pinned keys and user; default: the shipped ones (`shippedGitHosts`). */
  gitHosts?: GitHostPin[];
  /**
   * The VM's pinned host key ("TYPE BASE64"), for clients that bind the first hop (plain OpenSSH forwarding its agent to
   * the VM): an agent connection bound for forwarding through any other host key is refused everything.
   */
  vmHostKey?: string;
  /** Called for every decision, e.g. to print a local line when something was denied. */
  onDecision?: (d: SignDecision) => void;
  /** Called with a line for what is not a signature decision (an oversized message, a first hop that is not the VM). */
  onNotice?: (line: string) => void;
  /** ssh.confirm: asked before each signature the policy allows; false declines it. */
  confirm?: (d: SignDecision) => Promise<boolean>;
}

/**
 * Confirmation through the user's SSH_ASKPASS program, as `ssh-add -c` does (SSH_ASKPASS_PROMPT=confirm: exit 0 means
 * yes). Without SSH_ASKPASS nothing can ask, so every signature is declined — never silently allowed.
 */
export function askpassConfirm(env: NodeJS.ProcessEnv): (d: SignDecision) => Promise<boolean> {
  return (d) =>
    new Promise((resolve) => {
      if (!env.SSH_ASKPASS) return resolve(false);
      const at = d.destination ? ` at ${d.destination}` : "";
      const prompt = `spuff: allow ${d.vm} to sign a login as "${d.user ?? "?"}"${at} with ${d.comment || d.key}?`;
      const child = spawn(env.SSH_ASKPASS, [prompt], { env: { ...env, SSH_ASKPASS_PROMPT: "confirm" }, stdio: "ignore" });
      child.once("error", () => resolve(false));
      child.once("exit", (code) => resolve(code === 0));
    });
}

/** Why a signature was refused, as a stable word (the `rule` of a log line). */
export type RefusalRule =
  | "key-not-allowed"
  | "first-hop"
  | "session-mismatch"
  | "not-login"
  | "no-bind"
  | "bad-bind"
  | "forwarded"
  | "host-not-pinned"
  | "wrong-user"
  | "declined"
  | "agent-failed"
  | "agent-refused";

export interface SignDecision {
  time: string;
  vm: string;
  key: string;
  comment: string;
  user: string | null;
  service: string | null;
  /** The pinned git host the login is bound to, by name; null when the bound host key is no pinned git host's. */
  host: string | null;
  /** Fingerprint of the host key the client bound the login to; null without a bind. */
  hostKey: string | null;
  /** Where the signature goes, for people: the git host's name, else the bound host key's fingerprint. */
  destination: string | null;
  allowed: boolean;
  /** Who refused: spuff's guard, or the user's own agent (ssh-add -h constraints, locked, confirmation declined). */
  refusedBy: "spuff" | "agent" | null;
  rule: RefusalRule | null;
  reason: string;
}

/** The local line for a refused signature (undefined for an allowed one): who refused, what, why. */
export function refusalLine(d: SignDecision): string | undefined {
  if (d.allowed) return undefined;
  const what = `${d.user ? `"${d.user}"` : "a non-login"}${d.destination ? ` at ${d.destination}` : ""} with ${d.key}`;
  if (d.refusedBy === "agent") return `spuff: your SSH agent refused a signature for ${d.vm} (${what}): ${d.reason}`;
  return `spuff: refused a signature request from ${d.vm} (${what}): ${d.reason}`;
}

/** What to do about a refusal, for `spuff doctor`. */
export function refusalHint(d: SignDecision): string {
  switch (d.rule) {
    case "no-bind":
      return "the ssh client on the VM does not bind its agent requests to the server (session-bind@openssh.com, OpenSSH 8.9 and later), so spuff cannot tell where a signature would go and git-only refuses it: use OpenSSH 8.9 or newer on the VM (Debian 12 has 9.2), or accept signing for any server with ssh.sign_policy: any";
    case "host-not-pinned":
      return `the server's host key ${d.hostKey} is not a pinned git host key: pin it under git_hosts (host_keys or fingerprints; \`ssh-keyscan HOST | ssh-keygen -lf -\` shows them)`;
    case "wrong-user":
      return `${d.host} is pinned for another user: log in as the git_hosts user (default "git"), or set user: ${d.user} on its git_hosts entry`;
    case "agent-refused":
    case "agent-failed":
      return `your own agent refused: ${d.reason}`;
    default:
      return `spuff refused the signature: ${d.reason}`;
  }
}

/** Expands `~` and `$VAR`/`${VAR}` in a path. */
export function expandPath(p: string, env: NodeJS.ProcessEnv): string {
  return p
    .replace(/^~(?=$|\/)/, env.HOME || homedir())
    .replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a, b) => env[a ?? b] ?? "");
}

/**
 * Parses the data an agent is asked to sign as an SSH_MSG_USERAUTH_REQUEST (RFC 4252 §7), as `parseUserAuth` does.
 * Returns undefined for anything else (e.g. git commit signatures, which are SSHSIG blobs).
 */
export function parseUserAuthRequest(data: Buffer): { user: string; service: string } | undefined {
  const a = parseUserAuth(data);
  return a && { user: a.user, service: a.service };
}

function allowed(blob: Buffer, comment: string, allowedKeys: string[]): boolean {
  if (allowedKeys.length === 0) return true;
  const fp = fingerprintOf(blob);
  return allowedKeys.some((a) => a === fp || (comment !== "" && a === comment));
}

interface Bound {
  hostKey: Buffer;
  fingerprint: string;
  sessionId: Buffer;
  forwarding: boolean;
}

/**
 * One agent connection from the VM (one agent channel: one `ssh` process there). Like ssh-agent's socket entry it
 * records the session binds its client sent, and it has its own connection to the real agent, which gets the same
 * binds.
 */
class GuardConnection {
  readonly binds: Bound[] = [];
  /** The first bind that was refused (a bad signature, a second bind after a login bind, ...). */
  bindError?: string;
  /** Set when the connection is refused everything (its first hop is not the VM). */
  refused?: string;
  private real?: RealAgentConnection;

  constructor(private readonly socket: () => string | undefined) {}

  ask(payload: Buffer): Promise<Buffer> {
    if (!this.real) {
      const path = this.socket();
      if (!path) return Promise.reject(new Error("no local agent"));
      this.real = new RealAgentConnection(path);
    }
    return this.real.request(payload);
  }

  close(): void {
    this.real?.close();
  }
}

/**
 * The guarded agent forwarded to the VM: a filtering proxy in front of the user's real agent. It speaks the agent
 * protocol itself: the VM sees only allowed keys, may only sign what the policy permits, and can do nothing else
 * (no adding, removing or locking keys: every other request is refused). Each sign request is logged locally.
 * Messages over 256 KiB (OpenSSH's own bound) close the agent channel they came on; the session goes on.
 */
export class GuardedAgent extends BaseAgent {
  /** Comments of the real agent's keys, by fingerprint, from the last identities answer (for the log). */
  private readonly comments = new Map<string, string>();

  /** The real agent's socket and the policy; until `arm()` gives them, every request is refused. */
  private armed?: { socket: string; policy: AgentPolicy };

  arm(socket: string, policy: AgentPolicy): void {
    this.armed = { socket, policy };
  }

  private write(policy: AgentPolicy, line: object): void {
    try {
      mkdirSync(dirname(policy.logFile), { recursive: true, mode: 0o700 });
      appendFileSync(policy.logFile, `${JSON.stringify(line)}\n`, { mode: 0o600 });
    } catch {
      /* logging must never break the session */
    }
  }

  private log(policy: AgentPolicy, d: SignDecision): void {
    this.write(policy, d);
    policy.onDecision?.(d);
  }

  /** Logs what is not a signature decision (`event` says what) and tells the user. */
  private notice(policy: AgentPolicy, event: string, line: string, extra: object = {}): void {
    this.write(policy, { time: new Date().toISOString(), vm: policy.vm, event, ...extra, reason: line });
    policy.onNotice?.(`spuff: ${line}`);
  }

  /**
   * Answers one request from the VM. `conn` is the agent connection it came on (its binds and its connection to the real
   * agent); without one the request is answered on a connection of its own.
   */
  async handle(msg: Buffer, conn?: GuardConnection): Promise<Buffer> {
    if (!this.armed) return FAILURE;
    if (!conn) {
      const own = new GuardConnection(() => this.armed?.socket);
      try {
        return await this.handle(msg, own);
      } finally {
        own.close();
      }
    }
    const { policy } = this.armed;
    const type = msg[0];
    if (type === AGENTC_REQUEST_IDENTITIES) {
      if (conn.refused) return FAILURE;
      const reply = await conn.ask(msg).catch(() => FAILURE);
      if (reply[0] !== AGENT_IDENTITIES_ANSWER) return FAILURE;
      const r = new Reader(reply, 1);
      const n = r.uint32() ?? 0;
      const keep: Buffer[] = [];
      let count = 0;
      for (let i = 0; i < n; i++) {
        const blob = r.string();
        const comment = r.string();
        if (!blob || !comment) return FAILURE;
        this.comments.set(fingerprintOf(blob), comment.toString());
        if (allowed(blob, comment.toString(), policy.allowedKeys)) {
          keep.push(frame(blob), frame(comment));
          count++;
        }
      }
      const head = Buffer.alloc(5);
      head[0] = AGENT_IDENTITIES_ANSWER;
      head.writeUInt32BE(count, 1);
      return Buffer.concat([head, ...keep]);
    }
    if (type === AGENTC_SIGN_REQUEST) return this.sign(policy, conn, msg);
    if (type === AGENTC_EXTENSION) {
      const r = new Reader(msg, 1);
      if (r.string()?.toString() === "session-bind@openssh.com") return this.bind(policy, conn, r, msg);
    }
    return FAILURE;
  }

  /** session-bind@openssh.com: checks it as ssh-agent does (process_ext_session_bind), records it, passes it on. */
  private async bind(policy: AgentPolicy, conn: GuardConnection, r: Reader, msg: Buffer): Promise<Buffer> {
    const b = parseSessionBind(r);
    let problem: string | undefined;
    let fp: string | undefined;
    if (!b) problem = "a malformed session-bind";
    else {
      fp = fingerprintOf(b.hostKey);
      const v = b.sessionId.length === 0 || b.sessionId.length > MAX_SESSION_ID ? undefined : verifySshSignature(b.hostKey, b.signature, b.sessionId);
      if (!v) problem = `a session id of ${b.sessionId.length} bytes`;
      else if (!v.ok) problem = `a session-bind for ${fp} whose signature is wrong: ${v.reason}`;
      else if (conn.binds.some((x) => !x.forwarding)) problem = "a second session-bind after one for a login";
      else if (conn.binds.some((x) => x.sessionId.equals(b.sessionId) && !x.hostKey.equals(b.hostKey))) problem = "a session id bound before to another host key";
      else if (conn.binds.length >= MAX_BINDS) problem = `more than ${MAX_BINDS} session-binds`;
    }
    // The real agent keeps its own record (ssh-add -h destination constraints are checked against it) and verifies
    // for itself: it gets every bind, also one the guard refuses. An agent without the extension refuses them all.
    await conn.ask(msg).catch(() => FAILURE);
    if (problem || !b || !fp) {
      conn.bindError ??= problem;
      return FAILURE;
    }
    if (!conn.binds.some((x) => x.sessionId.equals(b.sessionId))) {
      conn.binds.push({ hostKey: b.hostKey, fingerprint: fp, sessionId: b.sessionId, forwarding: b.forwarding });
    }
    const vmFp = policy.vmHostKey ? fingerprintOfLine(policy.vmHostKey) : undefined;
    if (b.forwarding && vmFp && fp !== vmFp && !conn.refused) {
      conn.refused = `the agent connection was forwarded through host key ${fp}, not ${policy.vm}'s pinned ${vmFp}`;
      this.notice(policy, "first-hop-mismatch", `${conn.refused}: refusing every request on it`, { hostKey: fp, expected: vmFp });
    }
    return SUCCESS;
  }

  private async sign(policy: AgentPolicy, conn: GuardConnection, msg: Buffer): Promise<Buffer> {
    const r = new Reader(msg, 1);
    const blob = r.string();
    const data = r.string();
    if (!blob || !data) return FAILURE;
    const parsed = parseUserAuth(data);
    // A login request for another key than the one asked to sign is no login of this key.
    const auth = parsed?.key.equals(blob) ? parsed : undefined;
    const key = fingerprintOf(blob);
    const last = conn.binds.at(-1);
    const dest = last && !last.forwarding ? last : undefined;
    const known = policy.gitHosts ?? (defaultPins ??= shippedGitHosts());
    const pins = known.filter((p) => dest && p.fingerprints.includes(dest.fingerprint));
    const host = (pins.find((p) => p.user === auth?.user) ?? pins[0])?.name ?? null;
    const decision: SignDecision = {
      time: new Date().toISOString(),
      vm: policy.vm,
      key,
      comment: this.comments.get(key) ?? "",
      user: auth?.user ?? null,
      service: auth?.service ?? null,
      host,
      hostKey: dest?.fingerprint ?? null,
      destination: host ?? dest?.fingerprint ?? null,
      allowed: false,
      refusedBy: "spuff",
      rule: null,
      reason: "",
    };
    const refuse = (rule: RefusalRule, reason: string) => {
      decision.rule ??= rule;
      decision.reason ||= reason;
    };
    const vmFp = policy.vmHostKey ? fingerprintOfLine(policy.vmHostKey) : undefined;
    if (!allowed(blob, decision.comment, policy.allowedKeys)) refuse("key-not-allowed", "key not in ssh.allowed_keys");
    if (conn.refused) refuse("first-hop", conn.refused);
    if (auth && dest && !auth.sessionId.equals(dest.sessionId)) refuse("session-mismatch", "the login is for another session than the one its client bound (session-bind)");
    if (auth?.hostKey && dest && !auth.hostKey.equals(dest.hostKey)) refuse("session-mismatch", "the login names another host key than the one its client bound (session-bind)");
    if (policy.signPolicy === "git-only") {
      const hop = conn.binds.find((x) => x.forwarding && x.fingerprint !== vmFp);
      if (!auth) refuse("not-login", "not an SSH login (sign_policy: git-only)");
      if (conn.bindError) refuse("bad-bind", `its client sent ${conn.bindError} (sign_policy: git-only)`);
      if (!dest) {
        refuse("no-bind", "its client bound no session (no session-bind@openssh.com: OpenSSH older than 8.9?), so where the signature goes is unknown (sign_policy: git-only)");
      }
      if (hop) refuse("forwarded", `the agent was forwarded on from ${policy.vm} through host key ${hop.fingerprint} (sign_policy: git-only)`);
      if (dest && pins.length === 0) {
        const unpinned = known.filter((p) => p.fingerprints.length === 0).map((p) => p.name);
        const note = unpinned.length ? `; git_hosts ${unpinned.join(", ")} pin no key (host_keys or fingerprints)` : "";
        refuse("host-not-pinned", `host key ${dest.fingerprint} is no pinned git host's (sign_policy: git-only${note})`);
      }
      if (auth && pins.length && !pins.some((p) => p.user === auth.user)) {
        refuse("wrong-user", `user "${auth.user}" is not "${pins[0].user}", the user ${pins[0].name} expects (sign_policy: git-only)`);
      }
    }
    if (decision.rule) {
      this.log(policy, decision);
      return FAILURE;
    }
    if (policy.confirm && !(await policy.confirm(decision).catch(() => false))) {
      this.log(policy, { ...decision, rule: "declined", reason: "declined at the confirmation prompt (ssh.confirm; needs SSH_ASKPASS)" });
      return FAILURE;
    }
    let reply: Buffer;
    try {
      reply = await conn.ask(msg);
    } catch (err) {
      this.log(policy, { ...decision, refusedBy: "agent", rule: "agent-failed", reason: `the local agent failed: ${(err as Error).message}` });
      return FAILURE;
    }
    if (reply[0] !== AGENT_SIGN_RESPONSE) {
      this.log(policy, {
        ...decision,
        refusedBy: "agent",
        rule: "agent-refused",
        reason: "the local agent refused (spuff allowed it): a destination constraint of ssh-add -h, a locked agent, or a declined confirmation",
      });
      return FAILURE;
    }
    this.log(policy, { ...decision, allowed: true, refusedBy: null, reason: "ok" });
    return reply;
  }

  /** ssh2 calls this for each agent channel the VM opens; the returned stream speaks the agent protocol. */
  getStream(cb: (err: Error | undefined, stream?: Duplex) => void): void {
    const conn = new GuardConnection(() => this.armed?.socket);
    let chunks: Buffer[] = [];
    let have = 0;
    let over = false;
    let source: { destroy?: () => void } | undefined;
    let wantRead: (() => void) | undefined;
    const stream: Duplex = new Duplex({
      read() {
        wantRead?.();
        wantRead = undefined;
      },
      // One chunk at a time, answered strictly in order before the next is taken: the VM cannot queue up work or replies.
      write: (chunk: Buffer, _enc, done) => {
        if (over) return done();
        chunks.push(chunk);
        have += chunk.length;
        void (async () => {
          while (have >= 4 && !over) {
            if (chunks[0].length < 4) chunks = [Buffer.concat(chunks)];
            const len = chunks[0].readUInt32BE(0);
            if (len > AGENT_MAX_MESSAGE) {
              over = true;
              chunks = [];
              have = 0;
              const policy = this.armed?.policy;
              if (policy) {
                this.notice(policy, "message-too-large", `${policy.vm} sent an agent message of ${len} bytes (limit ${AGENT_MAX_MESSAGE}): closed that agent channel`, {
                  length: len,
                  limit: AGENT_MAX_MESSAGE,
                });
              }
              conn.close();
              source?.destroy?.();
              stream.destroy();
              break;
            }
            if (have < 4 + len) break;
            const all = Buffer.concat(chunks);
            const msg = all.subarray(4, 4 + len);
            const rest = all.subarray(4 + len);
            chunks = rest.length ? [rest] : [];
            have = rest.length;
            const reply = msg.length ? await this.handle(msg, conn) : FAILURE;
            if (stream.destroyed) return;
            if (!stream.push(frame(reply))) await new Promise<void>((r) => (wantRead = r));
          }
          done();
        })().catch(() => {
          // Nothing the VM sends may end the session: a request the guard cannot answer closes its channel only.
          over = true;
          conn.close();
          source?.destroy?.();
          stream.destroy();
          done();
        });
      },
      final: (callback) => {
        conn.close();
        stream.push(null);
        callback();
      },
      destroy: (err, callback) => {
        conn.close();
        callback(err);
      },
    });
    // ssh2 pipes the agent channel into the stream: that is what an oversized message closes.
    stream.on("pipe", (src: { destroy?: () => void }) => (source = src));
    stream.on("error", () => {});
    cb(undefined, stream);
  }
}

let defaultPins: GitHostPin[] | undefined;

/** Which agent socket to forward: config ssh.agent_socket, else IdentityAgent from ~/.ssh/config, else SSH_AUTH_SOCK. */
export function agentSocket(configured: string | undefined, identityAgent: string | undefined, env: NodeJS.ProcessEnv): { path: string; source: string } | undefined {
  if (configured) return { path: expandPath(configured, env), source: "ssh.agent_socket" };
  if (identityAgent && identityAgent.toLowerCase() !== "none") {
    if (identityAgent === "SSH_AUTH_SOCK") return env.SSH_AUTH_SOCK ? { path: env.SSH_AUTH_SOCK, source: "SSH_AUTH_SOCK" } : undefined;
    return { path: expandPath(identityAgent.replace(/^"|"$/g, ""), env), source: "IdentityAgent in ~/.ssh/config" };
  }
  return env.SSH_AUTH_SOCK ? { path: env.SSH_AUTH_SOCK, source: "SSH_AUTH_SOCK" } : undefined;
}

/** Preflight like `ssh-add -l`: each failure has its own message and fix. Returns the keys the agent holds. */
export async function preflightAgent(sock: { path: string; source: string } | undefined): Promise<ParsedKey[]> {
  if (!sock) {
    throw new UserError("no SSH agent to forward (SSH_AUTH_SOCK is not set)", {
      hint: ["start one and add your key: `eval \"$(ssh-agent)\" && ssh-add`", "or connect without it: `spuff ssh --no-agent`"],
    });
  }
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(sock.path);
  } catch {
    throw new UserError(`the SSH agent socket ${sock.path} (from ${sock.source}) does not exist`, {
      hint: ["the agent is not running or the variable is stale: `eval \"$(ssh-agent)\" && ssh-add`", "or set ssh.agent_socket in your config"],
    });
  }
  if (!st.isSocket()) throw new UserError(`${sock.path} (from ${sock.source}) is not a socket`, { hint: "point SSH_AUTH_SOCK or ssh.agent_socket at the agent's socket" });
  if (typeof process.getuid === "function" && st.uid !== process.getuid()) {
    throw new UserError(`the agent socket ${sock.path} belongs to uid ${st.uid}, not to you`, { hint: "use your own agent: `eval \"$(ssh-agent)\" && ssh-add`" });
  }
  if (st.mode & 0o077 && !(await parentIsPrivate(sock.path))) {
    throw new UserError(`the agent socket ${sock.path} is accessible to other users (mode ${(st.mode & 0o777).toString(8)})`, {
      hint: `fix it: chmod 600 ${sock.path} (or chmod 700 its directory)`,
    });
  }
  const real = new OpenSSHAgent(sock.path);
  const keys = await new Promise<ParsedKey[]>((resolve, reject) => {
    const t = setTimeout(() => reject(new UserError(`the SSH agent at ${sock.path} does not answer`, { hint: "restart it: `eval \"$(ssh-agent)\" && ssh-add`" })), 5000);
    real.getIdentities((err, k) => {
      clearTimeout(t);
      if (err) reject(new UserError(`the SSH agent at ${sock.path} does not answer: ${err.message}`, { hint: "restart it: `eval \"$(ssh-agent)\" && ssh-add`" }));
      else resolve(k ?? []);
    });
  });
  if (keys.length === 0) {
    throw new UserError("the SSH agent holds no keys, so nothing could sign a git login on the VM", {
      hint: ["add your key: `ssh-add` (or `ssh-add ~/.ssh/id_ed25519`)", "or connect without it: `spuff ssh --no-agent`"],
    });
  }
  return keys;
}

async function parentIsPrivate(path: string): Promise<boolean> {
  try {
    return (lstatSync(dirname(path)).mode & 0o077) === 0;
  } catch {
    return false;
  }
}
