import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { type AgentPolicy, askpassConfirm, GuardedAgent, refusalLine } from "./agent.js";
import type { VmTarget } from "./connect.js";
import { controlSocket, type GuardReply, type GuardRequest, type GuardSettings, guardRequest, type ServedVm, type SessionRequest, vmSocket } from "./guard-client.js";
import { OTHER_BUILD, type SessionReply } from "./warm-client.js";

/**
 * The guard daemon: spuff's guarded agent for plain OpenSSH (ssh, scp, rsync, VS Code Remote-SSH). One process serves
 * one agent socket per VM (`<dir>/NAME.sock`, what the generated ssh config names in `ForwardAgent`), each a
 * GuardedAgent with the same policy and log as `spuff ssh`. It is started on demand by `spuff guard ensure NAME`
 * (run by OpenSSH from the generated config's `Match exec`), which also arms it with the policy of that moment, and it
 * stops when no VM record is left (docs/adr/0007-guard-daemon.md). It is controlled over `<dir>/control.sock`
 * (JSON lines); the directory is private to the user (0700), so only the user can arm or stop it.
 */

/** The GuardedAgent policy for these settings; `onDecision` hears every decision (the daemon logs refusals). */
export function guardPolicy(s: GuardSettings, onDecision?: AgentPolicy["onDecision"], onNotice?: AgentPolicy["onNotice"]): AgentPolicy {
  return {
    allowedKeys: s.allowedKeys,
    signPolicy: s.signPolicy,
    logFile: s.logFile,
    vm: s.vm,
    gitHosts: s.gitHosts,
    vmHostKey: s.firstHopHostKey,
    onDecision,
    onNotice,
    confirm: s.confirm ? askpassConfirm({ ...process.env, ...s.confirm.env }) : undefined,
  };
}

export interface GuardServerOptions {
  dir: string;
  /** The VMs that still have a record: the daemon serves no other, and stops when none is left. */
  vms(): string[];
  log(line: string): void;
  /**
   * Settles one VM's settings in a caller's environment and directory (an `ensure` request): what `spuff guard ensure`
   * would do itself, done here where the config code and the agent's parser are already loaded. Undefined: no agent
   * (ssh.forward_agent: false).
   */
  settle(vm: string, env: Record<string, string>, cwd: string): Promise<GuardSettings | undefined>;
  /**
   * Settles a `spuff ssh NAME -- COMMAND` session in the caller's environment, directory and --config: the guard's
   * settings, the VM's target (pinned host key, per-VM key) and how long its warm connection stays after the last
   * session (ssh.persist). Undefined settings: no agent (ssh.forward_agent: false); 0: no warm connection. Without
   * this option the daemon runs no sessions (callers connect directly).
   */
  session?(req: SessionRequest): Promise<{ vm: string; settings?: GuardSettings; target: VmTarget; persistMs: number }>;
  /** Which spuff this is (its files); `ensure` replaces a daemon of another build, e.g. one from before an upgrade. */
  build: string;
  /** How often the records are looked at (a `rescan` request looks at once). */
  pollMs?: number;
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      chmodSync(path, 0o600);
      resolve();
    });
  });
}

const VM_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * Starts serving. Resolves once the control socket listens, with `done` (resolves when the daemon has stopped); or with
 * undefined when another daemon already answers there. The caller holds the guard directory's lock meanwhile, so two
 * daemons starting at once cannot both take over a stale socket.
 */
export async function startGuardServer(o: GuardServerOptions): Promise<{ done: Promise<void> } | undefined> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  chmodSync(o.dir, 0o700);
  if (await guardRequest(o.dir, { op: "ping" }, 2000).then(() => true, () => false)) return undefined;
  rmSync(controlSocket(o.dir), { force: true }); // left by a daemon that died

  const served = new Map<string, ServedVm & { server: Server; guard: GuardedAgent; sockets: Set<Socket>; listeners: Set<(line: string) => void> }>();
  const { WarmPool } = o.session ? await import("./warm.js") : { WarmPool: undefined };
  const warm = WarmPool ? new WarmPool(o.log) : undefined;
  let stopped!: () => void;
  const done = new Promise<void>((r) => (stopped = r));
  let stopping = false;

  const unserve = (vm: string, why: string) => {
    const s = served.get(vm);
    if (!s) return;
    served.delete(vm);
    warm?.close(vm, why);
    s.server.close();
    for (const sock of s.sockets) sock.destroy();
    rmSync(s.socket, { force: true });
    o.log(`stopped serving ${vm}: ${why}`);
  };

  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    for (const vm of [...served.keys()]) unserve(vm, why);
    warm?.closeAll(why);
    control.close();
    rmSync(controlSocket(o.dir), { force: true });
    o.log(`stopped: ${why}`);
    stopped();
  };

  const rescan = () => {
    let vms: string[];
    try {
      vms = o.vms();
    } catch (err) {
      vms = [];
      o.log(`cannot read the VM records: ${(err as Error).message}`);
    }
    for (const vm of served.keys()) if (!vms.includes(vm)) unserve(vm, "its VM record is gone");
    if (vms.length === 0) stop("no VM record left");
    return vms;
  };

  const arm = async (s: GuardSettings): Promise<string> => {
    if (!VM_NAME.test(s.vm)) throw new Error(`not a VM name: ${s.vm}`);
    if (!rescan().includes(s.vm)) throw new Error(`no VM named ${s.vm} on this machine`);
    let entry = served.get(s.vm);
    if (!entry) {
      const socket = vmSocket(o.dir, s.vm);
      const guard = new GuardedAgent();
      const sockets = new Set<Socket>();
      const server = createServer((sock) => {
        const current = served.get(s.vm);
        if (!current) return sock.destroy();
        current.connections++;
        sockets.add(sock);
        sock.on("close", () => sockets.delete(sock));
        sock.on("error", () => sock.destroy());
        guard.getStream((err, stream) => {
          if (err || !stream) return sock.destroy();
          sock.pipe(stream).pipe(sock);
        });
      });
      rmSync(socket, { force: true });
      await listen(server, socket);
      entry = { vm: s.vm, socket, agent: s.agent, allowedKeys: [], signPolicy: "", armedAt: "", connections: 0, server, guard, sockets, listeners: new Set() };
      served.set(s.vm, entry);
    }
    // Refusals and notices go to the log, and to the `spuff ssh` sessions running on the warm connection (their stderr).
    const listeners = entry.listeners;
    const tell = (line: string) => {
      o.log(line);
      for (const l of listeners) l(line);
    };
    entry.guard.arm(
      s.agent.path,
      guardPolicy(
        s,
        (d) => {
          const line = refusalLine(d);
          if (line) tell(line);
        },
        tell,
      ),
    );
    Object.assign(entry, { agent: s.agent, allowedKeys: s.allowedKeys, signPolicy: s.signPolicy, armedAt: new Date().toISOString() });
    o.log(`serving ${s.vm} at ${entry.socket}: agent ${s.agent.path} (${s.agent.why}), sign_policy ${s.signPolicy}, allowed_keys ${s.allowedKeys.length ? s.allowedKeys.join(",") : "all"}`);
    return entry.socket;
  };

  const status = (): GuardReply => ({
    ok: true,
    pid: process.pid,
    build: o.build,
    vms: [...served.values()].map(({ server: _s, guard: _g, sockets: _k, listeners: _l, ...v }) => v),
    warm: warm?.vms() ?? [],
  });

  /** A `spuff ssh -- COMMAND` session over the warm connection; `rest`: what the caller sent after its request line. */
  const session = async (c: Socket, req: SessionRequest, rest: Buffer) => {
    const refuse = (error: string) => c.end(`${JSON.stringify({ ok: false, error, fallback: true } satisfies SessionReply)}\n`);
    if (!warm || !o.session) return refuse("this daemon runs no sessions");
    if (req.build !== o.build) return refuse(OTHER_BUILD);
    let s: Awaited<ReturnType<NonNullable<GuardServerOptions["session"]>>>;
    try {
      s = await o.session(req);
    } catch (err) {
      return refuse((err as Error).message);
    }
    if (!s.settings) return refuse("ssh.forward_agent is false");
    if (s.persistMs <= 0) return refuse("ssh.persist is 0");
    try {
      await arm(s.settings);
    } catch (err) {
      return refuse((err as Error).message);
    }
    const entry = served.get(s.vm);
    if (!entry) return refuse(`${s.vm} is not served`);
    await warm.serve(s.vm, { target: s.target, guard: entry.guard, command: req.command, persistMs: s.persistMs }, c, rest, entry.listeners);
  };

  const control = createServer((c) => {
    let buf = Buffer.alloc(0);
    c.on("error", () => c.destroy());
    const onData = async (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) return;
      const line = buf.subarray(0, nl).toString();
      const rest = buf.subarray(nl + 1);
      buf = Buffer.alloc(0);
      c.off("data", onData);
      c.pause();
      let reply: GuardReply;
      let after: (() => void) | undefined;
      try {
        const req = JSON.parse(line) as GuardRequest;
        if (req.op === "session") return void session(c, req, rest);
        if (req.op === "arm") await arm(req.settings);
        else if (req.op === "ensure") {
          const settings = await o.settle(req.vm, req.env, req.cwd);
          if (settings) await arm(settings);
          else throw Object.assign(new Error("ssh.forward_agent is false"), { quiet: true });
        } else if (req.op === "rescan") rescan();
        else if (req.op === "stop") after = () => stop("asked to stop");
        reply = status();
      } catch (err) {
        const e = err as Error & { hints?: string[]; quiet?: boolean };
        reply = { ok: false, error: e.message, ...(e.hints?.[0] ? { hint: e.hints[0] } : {}), ...(e.quiet ? { quiet: true } : {}) };
      }
      c.end(`${JSON.stringify(reply)}\n`);
      after?.();
    };
    c.on("data", onData);
  });
  await listen(control, controlSocket(o.dir));
  const timer = setInterval(rescan, o.pollMs ?? 5000);
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => stop(sig));
  process.on("SIGHUP", () => {}); // the terminal that started it may go away
  o.log(`started (pid ${process.pid}), control socket ${controlSocket(o.dir)}`);
  rescan();
  return { done };
}
