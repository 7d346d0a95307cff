import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StateStore } from "../../src/core/state.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { BIN, tempHome, writeUserConfig } from "../helpers/cli.js";
import { type Agent, type Sshd, startAgent, startSshd } from "../helpers/sshd.js";

/** Peak resident memory (VmHWM) of a live process, in bytes; 0 once it is gone. */
function peakRss(pid: number): number {
  try {
    const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0;
  }
}

// A process on the VM that announces a 2 GiB agent message over the forwarded agent: spuff (the built CLI, a child
// process so its memory is its own) must stay small, close that agent channel, and keep the session.
describe("agent messages are bounded", () => {
  const t = tempHome();
  const clientKey = ed25519KeyPair("spuff-vm");
  let vm: Sshd;
  let agent: Agent;
  let vmDir: string;

  beforeAll(async () => {
    agent = startAgent(["work-key"]);
    vm = await startSshd({ authorizedKeys: [clientKey.public.trim()], extraConfig: ["AllowUsers spuff-test"] });
    const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
    const record = { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: vm.hostKey, endpoint: { host: "127.0.0.1", port: vm.port } };
    await new StateStore(stateDir).save(record, { private: clientKey.private, public: clientKey.public.trim() });
    writeUserConfig(t.env, "ssh:\n  user: spuff-test\n  tmux: false\n");
    vmDir = mkdtempSync(join(tmpdir(), "spuff-flood-"));
    chmodSync(vmDir, 0o755);
    // The attacker on the VM: a 2^31-byte length, then 1 MiB writes until the agent connection is closed (or all sent).
    writeFileSync(
      join(vmDir, "flood.mjs"),
      `import { connect } from "node:net";
const s = connect(process.env.SSH_AUTH_SOCK);
const head = Buffer.alloc(4);
head.writeUInt32BE(2 ** 31);
const chunk = Buffer.alloc(1 << 20, 0x41);
let sent = 0;
const pump = () => {
  while (sent < 2 ** 31) {
    sent += chunk.length;
    if (!s.write(chunk)) return s.once("drain", pump);
  }
  s.end();
};
s.on("connect", () => { s.write(head); pump(); });
s.on("error", () => {});
s.on("close", () => console.log("flood: the agent connection closed after " + sent + " bytes"));
`,
      { mode: 0o644 },
    );
  });

  afterAll(async () => {
    await vm?.stop();
    agent?.stop();
    rmSync(vmDir, { recursive: true, force: true });
    t.cleanup();
  });

  it("a 2 GiB announcement closes that agent channel, spuff's peak RSS stays under 150 MiB, and the shell goes on", async () => {
    const env = Object.fromEntries(Object.entries({ ...t.env, SSH_AUTH_SOCK: agent.socket }).filter(([, v]) => v !== undefined));
    const child = spawn(process.execPath, [BIN, "ssh", "box", "--", "bash", "-s"], { env, cwd: t.home, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<number | null>((r) => child.once("close", (c) => r(c)));
    let peak = 0;
    const poll = setInterval(() => {
      peak = Math.max(peak, peakRss(child.pid ?? 0));
      // A spuff that buffers the announced message would take the machine's memory: stop it well before.
      if (peak > 200 * 2 ** 20) child.kill("SIGKILL");
    }, 50);
    const seen = (text: string, ms: number) =>
      new Promise<void>((resolve, reject) => {
        const deadline = Date.now() + ms;
        const check = () => {
          if (stdout.includes(text)) return resolve();
          if (Date.now() > deadline || child.exitCode !== null) return reject(new Error(`no "${text}" on stdout:\n${stdout}\nstderr:\n${stderr}`));
          setTimeout(check, 50);
        };
        check();
      });
    try {
      child.stdin.write(`node ${vmDir}/flood.mjs; echo "flood-done $?"\n`);
      await seen("flood-done", 50_000);
      peak = Math.max(peak, peakRss(child.pid ?? 0));
      // The same session, a new agent channel: the agent still works.
      child.stdin.write(`ssh-add -l; echo "next $?"\n`);
      await seen("next ", 20_000);
      child.stdin.end();
      expect(await exit).toBe(0);
    } finally {
      clearInterval(poll);
      child.kill();
    }
    expect(stdout).toMatch(/flood: the agent connection closed after \d+ bytes/);
    const sent = Number(/closed after (\d+) bytes/.exec(stdout)?.[1]);
    expect(sent).toBeLessThan(2 ** 31); // closed early, not after the VM sent it all
    expect(stdout).toContain(agent.keys[0].fingerprint);
    expect(stdout).toContain("next 0");
    expect(stderr).toContain(`spuff: box sent an agent message of ${2 ** 31} bytes (limit 262144): closed that agent channel`);
    console.log(`peak RSS of spuff ssh during a 2 GiB agent frame: ${(peak / 2 ** 20).toFixed(1)} MiB; the VM wrote ${(sent / 2 ** 20).toFixed(0)} MiB before the channel closed`);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThan(150 * 2 ** 20);
    const log = readFileSync(join(t.env.XDG_STATE_HOME as string, "spuff", "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(log).toContainEqual(expect.objectContaining({ vm: "box", event: "message-too-large", length: 2 ** 31, limit: 262144 }));
  });
});
