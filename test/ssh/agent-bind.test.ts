import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentPolicy, GuardedAgent } from "../../src/ssh/agent.js";
import { parseUserAuth, verifySshSignature } from "../../src/ssh/agent-bind.js";
import { gitHostPins, shippedGitHosts } from "../../src/ssh/agent-hosts.js";
import { frame, RealAgentConnection } from "../../src/ssh/agent-upstream.js";
import { fingerprintOf } from "../../src/ssh/connect.js";
import { type Agent, startAgent } from "../helpers/sshd.js";

const str = (x: string | Buffer) => frame(Buffer.isBuffer(x) ? x : Buffer.from(x));

// Real keys of every host key type in a real ssh-agent, which makes the signatures (as a server's host key signs the
// session id): the guard's verification is checked against OpenSSH's own signing.
describe("session-bind verification with real signatures", () => {
  let a: Agent;
  let dir: string;
  const keys: Record<string, Buffer> = {};
  const sign = async (blob: Buffer, data: Buffer, flags = 0) => {
    const c = new RealAgentConnection(a.socket);
    const f = Buffer.alloc(4);
    f.writeUInt32BE(flags);
    const reply = await c.request(Buffer.concat([Buffer.from([13]), str(blob), str(data), f]));
    c.close();
    expect(reply[0]).toBe(14); // SSH_AGENT_SIGN_RESPONSE
    return reply.subarray(5, 5 + reply.readUInt32BE(1));
  };

  beforeAll(() => {
    a = startAgent([]);
    dir = mkdtempSync(join(tmpdir(), "spuff-bindkeys-"));
    for (const [name, args] of Object.entries({ ed25519: ["-t", "ed25519"], p256: ["-t", "ecdsa", "-b", "256"], p384: ["-t", "ecdsa", "-b", "384"], p521: ["-t", "ecdsa", "-b", "521"], rsa: ["-t", "rsa", "-b", "2048"], user: ["-t", "ed25519"] })) {
      const path = join(dir, name);
      execFileSync("ssh-keygen", ["-q", ...args, "-N", "", "-f", path, "-C", name]);
      execFileSync("ssh-add", ["-q", path], { env: { ...process.env, SSH_AUTH_SOCK: a.socket } });
      keys[name] = Buffer.from(readFileSync(`${path}.pub`, "utf8").split(" ")[1], "base64");
    }
  });

  afterAll(() => {
    a?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("verifies ed25519, ECDSA P-256/384/521 and RSA (ssh-rsa, rsa-sha2-256, rsa-sha2-512) signatures; a changed byte or another key fails", async () => {
    const sid = randomBytes(64);
    const cases: [string, number][] = [["ed25519", 0], ["p256", 0], ["p384", 0], ["p521", 0], ["rsa", 0], ["rsa", 2], ["rsa", 4]];
    for (const [name, flags] of cases) {
      const sig = await sign(keys[name], sid, flags);
      expect(verifySshSignature(keys[name], sig, sid), `${name}/${flags}`).toEqual({ ok: true });
      const other = Buffer.from(sid);
      other[7] ^= 1;
      expect(verifySshSignature(keys[name], sig, other).ok, `${name}/${flags} other data`).toBe(false);
      expect(verifySshSignature(keys.user, sig, sid).ok, `${name}/${flags} other key`).toBe(false);
    }
    const ed = await sign(keys.ed25519, sid);
    // The signature blob names its algorithm: an ed25519 signature relabelled as ECDSA is no ECDSA signature.
    const relabelled = Buffer.concat([str("ecdsa-sha2-nistp256"), ed.subarray(4 + 11)]);
    expect(verifySshSignature(keys.p256, relabelled, sid).ok).toBe(false);
    expect(verifySshSignature(Buffer.concat([str("ssh-dss"), str("x")]), ed, sid)).toMatchObject({ ok: false, reason: expect.stringContaining('"ssh-dss" is not one spuff verifies') });
  });

  describe("the guard on one agent channel", () => {
    let logDir: string;
    const log = () => readFileSync(join(logDir, "agent.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const policy = (p: Partial<AgentPolicy> = {}): AgentPolicy => ({ allowedKeys: [], signPolicy: "any", logFile: join(logDir, "agent.log"), vm: "box", ...p });
    /** One agent channel of a guard: requests in, replies out, in order. */
    const channel = (guard: GuardedAgent) => {
      let s: Duplex | undefined;
      guard.getStream((_e, x) => (s = x));
      let buf = Buffer.alloc(0);
      const waiting: ((b: Buffer) => void)[] = [];
      s?.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
          const m = buf.subarray(4, 4 + buf.readUInt32BE(0));
          buf = buf.subarray(4 + m.length);
          waiting.shift()?.(m);
        }
      });
      return {
        ask: (payload: Buffer) =>
          new Promise<Buffer>((r) => {
            waiting.push(r);
            s?.write(frame(payload));
          }),
        close: () => s?.end(),
      };
    };
    const bindMsg = (hostKey: Buffer, sid: Buffer, sig: Buffer, forwarding = false) =>
      Buffer.concat([Buffer.from([27]), str("session-bind@openssh.com"), str(hostKey), str(sid), str(sig), Buffer.from([forwarding ? 1 : 0])]);
    const login = (sid: Buffer, user: string, hostKey: Buffer) =>
      Buffer.concat([str(sid), Buffer.from([50]), str(user), str("ssh-connection"), str("publickey-hostbound-v00@openssh.com"), Buffer.from([1]), str("ssh-ed25519"), str(keys.user), str(hostKey)]);
    const signMsg = (data: Buffer) => Buffer.concat([Buffer.from([13]), str(keys.user), str(data), Buffer.alloc(4)]);

    beforeAll(() => {
      logDir = mkdtempSync(join(tmpdir(), "spuff-bindlog-"));
    });
    afterAll(() => rmSync(logDir, { recursive: true, force: true }));

    it("a login is signed only for the session its client bound, and a second bind is refused", async () => {
      const guard = new GuardedAgent();
      guard.arm(a.socket, policy());
      const c = channel(guard);
      const sid = randomBytes(32);
      expect(parseUserAuth(login(sid, "git", keys.p256))).toMatchObject({ user: "git", method: "publickey-hostbound-v00@openssh.com" });
      expect([...(await c.ask(bindMsg(keys.p256, sid, await sign(keys.p256, sid))))]).toEqual([6]); // SUCCESS
      expect((await c.ask(signMsg(login(randomBytes(32), "git", keys.p256))))[0]).toBe(5);
      expect(log().at(-1)).toMatchObject({ allowed: false, rule: "session-mismatch", hostKey: fingerprintOf(keys.p256) });
      expect((await c.ask(signMsg(login(sid, "git", keys.rsa))))[0]).toBe(5);
      expect(log().at(-1)).toMatchObject({ allowed: false, rule: "session-mismatch", reason: expect.stringContaining("another host key") });
      expect((await c.ask(signMsg(login(sid, "git", keys.p256))))[0]).toBe(14);
      expect(log().at(-1)).toMatchObject({ allowed: true, user: "git", hostKey: fingerprintOf(keys.p256), destination: fingerprintOf(keys.p256) });
      const sid2 = randomBytes(32);
      expect([...(await c.ask(bindMsg(keys.rsa, sid2, await sign(keys.rsa, sid2, 4))))]).toEqual([5]);
      c.close();
    });

    it("a bind whose signature is not the host key's is refused, and under git-only nothing is signed on that channel", async () => {
      const guard = new GuardedAgent();
      const pins = gitHostPins([{ host: "git.example", host_keys: [`ecdsa-sha2-nistp256 ${keys.p256.toString("base64")}`] }]);
      guard.arm(a.socket, policy({ signPolicy: "git-only", gitHosts: pins }));
      const c = channel(guard);
      const sid = randomBytes(32);
      // Signed by another key than the one it names: as a server that does not hold the pinned key would have to.
      expect([...(await c.ask(bindMsg(keys.p256, sid, await sign(keys.p384, sid))))]).toEqual([5]);
      expect((await c.ask(signMsg(login(sid, "git", keys.p256))))[0]).toBe(5);
      expect(log().at(-1)).toMatchObject({ allowed: false, rule: "bad-bind", reason: expect.stringContaining("whose signature is wrong") });
      c.close();

      const good = channel(guard);
      expect([...(await good.ask(bindMsg(keys.p256, sid, await sign(keys.p256, sid))))]).toEqual([6]);
      expect((await good.ask(signMsg(login(sid, "git", keys.p256))))[0]).toBe(14);
      expect(log().at(-1)).toMatchObject({ allowed: true, host: "git.example", destination: "git.example" });
      good.close();
    });
  });

  it("the shipped git hosts are pinned with their keys, for user git", () => {
    const hosts = shippedGitHosts();
    expect(hosts.map((h) => h.name)).toEqual(["github.com", "gitlab.com", "bitbucket.org", "codeberg.org", "git.sr.ht"]);
    // GitHub's published ed25519 fingerprint (docs.github.com, "GitHub's SSH key fingerprints").
    expect(hosts[0]).toMatchObject({ user: "git", fingerprints: expect.arrayContaining(["SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"]) });
    expect(gitHostPins([{ host: "git.internal", user: "gitea", fingerprints: ["SHA256:abc"] }]).at(-1)).toEqual({ name: "git.internal", user: "gitea", fingerprints: ["SHA256:abc"] });
  });
});
