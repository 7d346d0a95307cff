import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { type AgentPolicy, askpassConfirm, GuardedAgent, refusalLine } from "./agent.js";
import { controlSocket, type GuardReply, type GuardRequest, type GuardSettings, guardRequest, type ServedVm, vmSocket } from "./guard-client.js";

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

  const served = new Map<string, ServedVm & { server: Server; guard: GuardedAgent; sockets: Set<Socket> }>();
  let stopped!: () => void;
  const done = new Promise<void>((r) => (stopped = r));
  let stopping = false;

  const unserve = (vm: string, why: string) => {
    const s = served.get(vm);
    if (!s) return;
    served.delete(vm);
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
      entry = { vm: s.vm, socket, agent: s.agent, allowedKeys: [], signPolicy: "", armedAt: "", connections: 0, server, guard, sockets };
      served.set(s.vm, entry);
    }
    entry.guard.arm(
      s.agent.path,
      guardPolicy(
        s,
        (d) => {
          const line = refusalLine(d);
          if (line) o.log(line);
        },
        (line) => o.log(line),
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
    vms: [...served.values()].map(({ server: _s, guard: _g, sockets: _k, ...v }) => v),
  });

  const control = createServer((c) => {
    let buf = "";
    c.on("error", () => c.destroy());
    c.on("data", async (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = "";
      let reply: GuardReply;
      let after: (() => void) | undefined;
      try {
        const req = JSON.parse(line) as GuardRequest;
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
    });
  });
  await listen(control, controlSocket(o.dir));
  const timer = setInterval(rescan, o.pollMs ?? 5000);
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => stop(sig));
  process.on("SIGHUP", () => {}); // the terminal that started it may go away
  o.log(`started (pid ${process.pid}), control socket ${controlSocket(o.dir)}`);
  rescan();
  return { done };
}
