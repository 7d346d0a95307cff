import { spawn } from "node:child_process";
import { appendFileSync, lstatSync, mkdirSync } from "node:fs";
import { createConnection } from "node:net";
import { homedir } from "node:os";
import { dirname } from "node:path";
import { Duplex } from "node:stream";
import type { ParsedKey } from "ssh2";
import { UserError } from "../core/errors.js";
import { fingerprintOf } from "./connect.js";
import { BaseAgent, OpenSSHAgent } from "./ssh2.js";

// SSH agent protocol message numbers (draft-miller-ssh-agent).
const AGENT_FAILURE = 5;
const AGENTC_REQUEST_IDENTITIES = 11;
const AGENT_IDENTITIES_ANSWER = 12;
const AGENTC_SIGN_REQUEST = 13;

function frame(payload: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(payload.length);
  return Buffer.concat([len, payload]);
}

function sshString(b: Buffer): Buffer {
  return frame(b);
}

/** Reads SSH strings from a buffer. */
class Reader {
  constructor(
    private readonly b: Buffer,
    public off = 0,
  ) {}
  string(): Buffer | undefined {
    if (this.off + 4 > this.b.length) return undefined;
    const len = this.b.readUInt32BE(this.off);
    if (this.off + 4 + len > this.b.length) return undefined;
    const s = this.b.subarray(this.off + 4, this.off + 4 + len);
    this.off += 4 + len;
    return s;
  }
  uint32(): number | undefined {
    if (this.off + 4 > this.b.length) return undefined;
    const v = this.b.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
}

/** Sends one framed request to the real agent and returns its one framed reply (without the length). */
function askRealAgent(socket: string, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = createConnection(socket);
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error("the local agent did not answer"));
    }, 120_000); // a confirmation dialog (ssh-add -c, 1Password) may wait for the user
    c.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        clearTimeout(timer);
        c.end();
        resolve(buf.subarray(4, 4 + buf.readUInt32BE(0)));
      }
    });
    c.write(frame(payload));
  });
}

const FAILURE = Buffer.from([AGENT_FAILURE]);

export interface AgentPolicy {
  /** Fingerprints ("SHA256:...") or key comments the VM may see; empty = all. */
  allowedKeys: string[];
  /** git-only: sign only SSH user-auth requests for the user "git". */
  signPolicy: "git-only" | "any";
  /** Where each sign request is logged (JSON lines). */
  logFile: string;
  vm: string;
  /** Called for every decision, e.g. to print a local line when something was denied. */
  onDecision?: (d: SignDecision) => void;
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
      const prompt = `spuff: allow ${d.vm} to sign a login as "${d.user ?? "?"}" with ${d.comment || d.key}?`;
      const child = spawn(env.SSH_ASKPASS, [prompt], { env: { ...env, SSH_ASKPASS_PROMPT: "confirm" }, stdio: "ignore" });
      child.once("error", () => resolve(false));
      child.once("exit", (code) => resolve(code === 0));
    });
}

export interface SignDecision {
  time: string;
  vm: string;
  key: string;
  comment: string;
  user: string | null;
  service: string | null;
  allowed: boolean;
  reason: string;
}

/** Expands `~` and `$VAR`/`${VAR}` in a path. */
export function expandPath(p: string, env: NodeJS.ProcessEnv): string {
  return p
    .replace(/^~(?=$|\/)/, env.HOME || homedir())
    .replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a, b) => env[a ?? b] ?? "");
}

/**
 * Parses the data an agent is asked to sign as an SSH_MSG_USERAUTH_REQUEST (RFC 4252 §7):
 * string session id, byte 50, string user, string service, string "publickey" (or the host-bound variant), bool,
 * string alg, string key.
 * Returns undefined for anything else (e.g. git commit signatures, which are SSHSIG blobs).
 */
export function parseUserAuthRequest(data: Buffer): { user: string; service: string } | undefined {
  let off = 0;
  const str = (): Buffer | undefined => {
    if (off + 4 > data.length) return undefined;
    const len = data.readUInt32BE(off);
    off += 4;
    if (off + len > data.length) return undefined;
    const s = data.subarray(off, off + len);
    off += len;
    return s;
  };
  if (!str()) return undefined;
  if (data[off] !== 50) return undefined;
  off += 1;
  const user = str();
  const service = str();
  const method = str();
  // OpenSSH 8.9+ signs with the "publickey-hostbound-v00@openssh.com" method (it adds the server's host key).
  const m = method?.toString();
  if (!user || !service || (m !== "publickey" && m !== "publickey-hostbound-v00@openssh.com")) return undefined;
  return { user: user.toString(), service: service.toString() };
}

function blobFingerprint(blob: Buffer): string {
  return fingerprintOf(blob);
}

function allowed(blob: Buffer, comment: string, allowedKeys: string[]): boolean {
  if (allowedKeys.length === 0) return true;
  const fp = blobFingerprint(blob);
  return allowedKeys.some((a) => a === fp || (comment !== "" && a === comment));
}

/**
 * The guarded agent forwarded to the VM: a filtering proxy in front of the user's real agent. It speaks the agent
 * protocol itself: the VM sees only allowed keys, may only sign what the policy permits, and can do nothing else
 * (no adding, removing or locking keys: every other request is refused). Each sign request is logged locally.
 */
export class GuardedAgent extends BaseAgent {
  /** Comments of the real agent's keys, by fingerprint, from the last identities answer (for the log). */
  private readonly comments = new Map<string, string>();

  /** The real agent's socket and the policy; until `arm()` gives them, every request is refused. */
  private armed?: { socket: string; policy: AgentPolicy };

  arm(socket: string, policy: AgentPolicy): void {
    this.armed = { socket, policy };
  }

  private log(policy: AgentPolicy, d: SignDecision): void {
    try {
      mkdirSync(dirname(policy.logFile), { recursive: true, mode: 0o700 });
      appendFileSync(policy.logFile, `${JSON.stringify(d)}\n`, { mode: 0o600 });
    } catch {
      /* logging must never break the session */
    }
    policy.onDecision?.(d);
  }

  /** Answers one request from the VM. */
  async handle(msg: Buffer): Promise<Buffer> {
    if (!this.armed) return FAILURE;
    const { socket, policy } = this.armed;
    const type = msg[0];
    if (type === AGENTC_REQUEST_IDENTITIES) {
      const reply = await askRealAgent(socket, msg).catch(() => FAILURE);
      if (reply[0] !== AGENT_IDENTITIES_ANSWER) return FAILURE;
      const r = new Reader(reply, 1);
      const n = r.uint32() ?? 0;
      const keep: Buffer[] = [];
      let count = 0;
      for (let i = 0; i < n; i++) {
        const blob = r.string();
        const comment = r.string();
        if (!blob || !comment) return FAILURE;
        this.comments.set(blobFingerprint(blob), comment.toString());
        if (allowed(blob, comment.toString(), policy.allowedKeys)) {
          keep.push(sshString(blob), sshString(comment));
          count++;
        }
      }
      const head = Buffer.alloc(5);
      head[0] = AGENT_IDENTITIES_ANSWER;
      head.writeUInt32BE(count, 1);
      return Buffer.concat([head, ...keep]);
    }
    if (type === AGENTC_SIGN_REQUEST) {
      const r = new Reader(msg, 1);
      const blob = r.string();
      const data = r.string();
      if (!blob || !data) return FAILURE;
      const auth = parseUserAuthRequest(data);
      const key = blobFingerprint(blob);
      const decision: SignDecision = {
        time: new Date().toISOString(),
        vm: policy.vm,
        key,
        comment: this.comments.get(key) ?? "",
        user: auth?.user ?? null,
        service: auth?.service ?? null,
        allowed: false,
        reason: "",
      };
      if (!allowed(blob, decision.comment, policy.allowedKeys)) decision.reason = "key not in ssh.allowed_keys";
      else if (policy.signPolicy === "git-only" && auth?.user !== "git")
        decision.reason = auth ? `user "${auth.user}" is not "git" (sign_policy: git-only)` : "not an SSH login (sign_policy: git-only)";
      if (decision.reason) {
        this.log(policy, decision);
        return FAILURE;
      }
      if (policy.confirm && !(await policy.confirm(decision).catch(() => false))) {
        this.log(policy, { ...decision, reason: "declined at the confirmation prompt (ssh.confirm; needs SSH_ASKPASS)" });
        return FAILURE;
      }
      let reply: Buffer;
      try {
        reply = await askRealAgent(socket, msg);
      } catch (err) {
        this.log(policy, { ...decision, reason: `the local agent failed: ${(err as Error).message}` });
        return FAILURE;
      }
      if (reply[0] === AGENT_FAILURE) {
        this.log(policy, { ...decision, reason: "the local agent refused (locked, or confirmation declined)" });
        return FAILURE;
      }
      this.log(policy, { ...decision, allowed: true, reason: "ok" });
      return reply;
    }
    return FAILURE;
  }

  /** ssh2 calls this for each agent channel the VM opens; the returned stream speaks the agent protocol. */
  getStream(cb: (err: Error | undefined, stream?: Duplex) => void): void {
    let buf = Buffer.alloc(0);
    let chain = Promise.resolve();
    const stream: Duplex = new Duplex({
      read() {},
      write: (chunk: Buffer, _enc, done) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
          const msg = buf.subarray(4, 4 + buf.readUInt32BE(0));
          buf = buf.subarray(4 + msg.length);
          // Answer strictly in order, as the protocol requires.
          chain = chain.then(async () => {
            const reply = msg.length ? await this.handle(msg) : FAILURE;
            stream.push(frame(reply));
          });
        }
        done();
      },
    });
    cb(undefined, stream);
  }
}

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
