import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ProviderError } from "../../src/core/errors.js";
import { parseNewHostKey } from "../../src/core/rotate.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { phaseShown, spawnCli } from "../helpers/cli.js";
import { type Harness, harness, problems } from "../providers/hetzner/harness.js";
import { parseUserData, type StandinVm, startStandinVm } from "../helpers/standin-vm.js";

// Host key rotation after first contact (docs/adr/0008-host-key-rotation.md), through the real CLI against the Hetzner
// fake, with a real sshd standing in for the server that runs the rotate script shipped in the user-data.
const bare = (line: string) => line.trim().split(" ").slice(0, 2).join(" ");

/** The ed25519 key the sshd at host:22 presents, as OpenSSH sees it. */
function presentedKey(host: string): string {
  const out = execFileSync("ssh-keyscan", ["-T", "5", "-t", "ed25519", host], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const line = out.split("\n").find((l) => l.startsWith(`${host} `));
  if (!line) throw new Error(`ssh-keyscan ${host}: no key`);
  return line.split(" ").slice(1, 3).join(" ");
}

describe("host key rotation on up", () => {
  let h: Harness;
  const standins = new Map<number, StandinVm>();
  /** Replaces the stand-in's rotate script with `script(realScriptPath)` right after it "boots". */
  let tamper: ((dir: string, real: string) => string) | undefined;

  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
    for (const s of standins.values()) await s.stop();
    standins.clear();
    tamper = undefined;
  });

  const start = async () => {
    h = await harness({
      ipv4Prefix: "127.0.76.",
      standin: false,
      onServerCreated: async (s) => {
        const vm = await startStandinVm(s.userData, s.ipv4 ?? "::1");
        standins.set(s.id, vm);
        if (tamper) {
          const script = join(vm.dir, "lib", "rotate-host-key");
          const real = join(vm.dir, "lib", "real-rotate-host-key");
          copyFileSync(script, real);
          writeFileSync(script, tamper(vm.dir, real), { mode: 0o755 });
        }
      },
      onServerDeleted: async (s) => {
        await standins.get(s.id)?.stop();
        standins.delete(s.id);
      },
    });
  };
  const stateDir = () => join(h.env.XDG_STATE_HOME as string, "spuff");
  const record = (name: string) => JSON.parse(readFileSync(join(stateDir(), "vms", name, "vm.json"), "utf8"));
  const knownHosts = () => readFileSync(join(stateDir(), "known_hosts"), "utf8");
  const userDataKey = () => {
    const [server] = h.fake.servers.values();
    const keys = parseUserData(server.userData).ssh_keys as Record<string, string>;
    return { public: bare(keys.ed25519_public), private: keys.ed25519_private };
  };

  it("after up the VM presents a new key, not the one in its user-data; spuff ssh and plain OpenSSH (strict) connect", async () => {
    await start();
    const up = await h.spuff(["up", "rot", "--json"]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    const events = up.stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(events).toContainEqual(expect.objectContaining({ event: "phase", phase: "rotate host key", status: "done" }));
    const phases = events.filter((e) => e.event === "phase" && e.status === "started").map((e) => e.phase);
    expect(phases.slice(-3)).toEqual(["cloud-init", "rotate host key", "ready"]);

    const old = userDataKey();
    const presented = presentedKey("127.0.76.2");
    expect(presented).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI/);
    expect(presented).not.toBe(old.public);
    // Re-pinned everywhere: the record (alone), the known_hosts spuff generates, which the generated ssh_config names.
    expect(record("rot").hostKey).toBe(presented);
    expect(record("rot").nextHostKey).toBeUndefined();
    expect(knownHosts()).toBe(`spuff-rot ${presented}\n`);
    const sshConfig = join(h.env.XDG_CONFIG_HOME as string, "spuff", "ssh_config");
    const cfg = readFileSync(sshConfig, "utf8");
    expect(cfg).toContain(`UserKnownHostsFile ${join(stateDir(), "known_hosts")}`);
    expect(cfg).toContain("StrictHostKeyChecking yes");

    const viaSpuff = await h.spuff(["ssh", "rot", "--no-agent", "--", "echo", "in"]);
    expect(viaSpuff.stdout).toBe("in\n");
    expect(viaSpuff.code).toBe(0);
    const plain = spawnSync("ssh", ["-F", sshConfig, "-o", "BatchMode=yes", "spuff-rot", "echo", "in"], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, HOME: h.home.home },
    });
    // Nothing from OpenSSH (no host key warning); the guard's `Match exec` notes that there is no agent to forward.
    expect(plain.stderr.split("\n").filter((l) => l && !l.startsWith("spuff: "))).toEqual([]);
    expect(plain.stdout).toBe("in\n");
    expect(plain.status).toBe(0);

    // On the VM: one key pair, the new one; no old or half-made key; cloud-init's copies of user-data gone
    // (its semaphores stay, so a reboot does not install the old key again).
    const [vm] = standins.values();
    expect(readdirSync(join(vm.dir, "keys")).sort()).toEqual(["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
    expect(bare(execFileSync("ssh-keygen", ["-y", "-f", vm.hostKeyFile], { encoding: "utf8" }))).toBe(presented);
    expect(bare(readFileSync(`${vm.hostKeyFile}.pub`, "utf8"))).toBe(presented);
    expect(readdirSync(join(vm.dir, "cloud", "instances", "i-standin"))).toEqual(["sem"]);
    expect(readdirSync(join(vm.dir, "cloud-run"))).toEqual([]);
    const oldBody = old.private.split("\n")[2];
    expect(spawnSync("grep", ["-rqF", oldBody, vm.dir]).status).toBe(1);

    expect((await h.spuff(["down", "rot", "--yes"])).code).toBe(0);
  });

  it("an impostor holding the key from user-data (as any process on the VM can read it) is refused after up", async () => {
    await start();
    expect((await h.spuff(["up", "imp"])).code).toBe(0);
    // The VM goes away and something at its address serves the user-data's host key and accepts the same login.
    const [server] = h.fake.servers.values();
    await standins.get(server.id)?.stop();
    standins.set(server.id, await startStandinVm(server.userData, "127.0.76.2"));
    expect(presentedKey("127.0.76.2")).toBe(userDataKey().public);

    const viaSpuff = await h.spuff(["ssh", "imp", "--no-agent", "--", "echo", "in"]);
    expect(viaSpuff.stdout).toBe("");
    expect(viaSpuff.stderr).toContain("error: host key of imp (127.0.76.2:22) does not match the key pinned");
    expect(viaSpuff.code).not.toBe(0);
    const plain = spawnSync("ssh", ["-F", join(h.env.XDG_CONFIG_HOME as string, "spuff", "ssh_config"), "-o", "BatchMode=yes", "spuff-imp", "echo", "in"], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, HOME: h.home.home },
    });
    expect(plain.stdout).toBe("");
    expect(plain.stderr).toContain("Host key verification failed");
    expect(plain.status).toBe(255);
    expect((await h.spuff(["down", "imp", "--yes"])).code).toBe(0);
  });

  it("a VM that answers with anything but one ed25519 public key: up fails and rolls back, nothing of it is pinned", async () => {
    await start();
    const other = ed25519KeyPair();
    // Two keys on one line (a line is the answer spuff reads before it sends the commit).
    tamper = () => `#!/bin/bash\n[ "$1" = prepare ] && printf '%s %s\\n' '${bare(other.public)}' '${bare(ed25519KeyPair().public)}'\n`;
    const up = await h.spuff(["up", "evil"]);
    expect(up.code, up.stderr).toBe(2);
    expect(up.stderr).toContain("error: the VM answered the host key rotation with something other than one ed25519 public key");
    expect(up.stderr).toContain(`it printed: "${bare(other.public)} ssh-ed25519 `);
    expect(up.stderr).toContain("rolled back evil");
    expect(h.fake.servers.size).toBe(0);
    expect(knownHosts()).toBe("");
  });

  it("with --keep-on-failure the refused VM keeps working with the key from its user-data, pinned alone", async () => {
    await start();
    tamper = () => `#!/bin/bash\n[ "$1" = prepare ] && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI not-a-key'\n`;
    const up = await h.spuff(["up", "kept", "--keep-on-failure"]);
    expect(up.code).toBe(2);
    expect(up.stderr).toContain("something other than one ed25519 public key");
    const old = userDataKey();
    expect(presentedKey("127.0.76.2")).toBe(old.public);
    expect(bare(record("kept").hostKey)).toBe(old.public);
    expect(record("kept").nextHostKey).toBeUndefined();
    expect(knownHosts().split("\n").filter(Boolean).map((l) => bare(l.slice("spuff-kept ".length)))).toEqual([old.public]);
    const r = await h.spuff(["ssh", "kept", "--no-agent", "--", "true"]);
    expect(r.code).toBe(0);
    expect((await h.spuff(["down", "kept", "--yes"])).code).toBe(0);
  });

  it("a VM that claims the switch but keeps presenting the old key: the fresh connection catches it, only the old key stays pinned", async () => {
    await start();
    // The real prepare (a key is made and pinned next to the old one), then a commit that only echoes the key spuff sent.
    tamper = (_dir, real) =>
      `#!/bin/bash\nif [ "$1" = prepare ]; then /bin/bash ${real} prepare < /dev/null || exit 1; read -r step; echo "\${step#commit }"; read -r step; exit 0; fi\nexec /bin/bash ${real} "$@"\n`;
    const up = await h.spuff(["up", "liar", "--keep-on-failure"]);
    expect(up.code).toBe(2);
    expect(up.stderr).toContain("error: replacing the host key of liar failed: after the switch its sshd still presents the old key");
    expect(up.stderr).toContain("the VM still presents the key from its user-data; spuff pins only that one");
    const old = userDataKey();
    expect(presentedKey("127.0.76.2")).toBe(old.public);
    expect(bare(record("liar").hostKey)).toBe(old.public);
    expect(record("liar").nextHostKey).toBeUndefined();
    expect(knownHosts().split("\n").filter(Boolean).map((l) => bare(l.slice("spuff-liar ".length)))).toEqual([old.public]);
    // abort removed the key prepare had made.
    const [vm] = standins.values();
    expect(readdirSync(join(vm.dir, "keys")).sort()).toEqual(["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
    expect((await h.spuff(["ssh", "liar", "--no-agent", "--", "true"])).code).toBe(0);
    expect((await h.spuff(["down", "liar", "--yes"])).code).toBe(0);
  });

  it("Ctrl-C during the rotation rolls the VM back: nothing is left", async () => {
    await start();
    tamper = (_dir, real) => `#!/bin/bash\n[ "$1" = prepare ] && sleep 2\nexec /bin/bash ${real} "$@"\n`;
    const run = spawnCli(["--provider", "hetzner", "up", "intr"], h.env, h.home.home);
    await phaseShown(run, "rotate host key");
    run.child.kill("SIGINT");
    expect(await run.exit).toBe(130);
    expect(run.stderr()).toContain("interrupted during rotate host key; rolled back, nothing is left");
    await h.fake.settled();
    expect({ servers: h.fake.servers.size, keys: h.fake.sshKeys.size }).toEqual({ servers: 0, keys: 0 });
    expect(knownHosts()).toBe("");
  });

  it("a crash while both keys are pinned: known_hosts accepts either key the VM may present, and reap removes the VM", async () => {
    await start();
    // The commit waits, so spuff can be killed after it pinned the new key next to the old one.
    tamper = (_dir, real) =>
      `#!/bin/bash\nif [ "$1" = prepare ]; then /bin/bash ${real} prepare < /dev/null || exit 1; read -r step; sleep 3; exec /bin/bash ${real} commit "\${step#commit }"; fi\nexec /bin/bash ${real} "$@"\n`;
    const run = spawnCli(["--provider", "hetzner", "up", "crash"], h.env, h.home.home);
    await phaseShown(run, "rotate host key");
    const deadline = Date.now() + 10_000;
    // Both written: the record, then known_hosts (a kill between the two lands before the commit is sent, so the VM
    // still presents the old key; this test is about the moment after both).
    const pinnedBoth = () => {
      const next = record("crash").nextHostKey;
      return next !== undefined && knownHosts().includes(bare(next));
    };
    while (Date.now() < deadline && !pinnedBoth()) await new Promise((r) => setTimeout(r, 20));
    run.child.kill("SIGKILL");
    await run.exit;
    const rec = record("crash");
    expect(bare(rec.hostKey)).toBe(userDataKey().public);
    expect(rec.nextHostKey).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\S{43}$/);
    expect(knownHosts().split("\n").filter(Boolean).map((l) => bare(l.slice("spuff-crash ".length)))).toEqual([userDataKey().public, rec.nextHostKey]);
    // Whichever of the two the VM presents (the commit runs on after spuff died), the pin holds it.
    expect([userDataKey().public, rec.nextHostKey]).toContain(presentedKey("127.0.76.2"));
    const reap = await h.spuff(["reap", "--yes"]);
    expect(reap.code).toBe(0);
    expect(reap.stdout).toMatch(/crash\s+hetzner\s+interrupted\s+destroy/);
    expect(h.fake.servers.size + h.fake.sshKeys.size).toBe(0);
  });
});

describe("parseNewHostKey: what the VM prints is checked strictly", () => {
  const current = ed25519KeyPair().public;
  const fresh = bare(ed25519KeyPair().public);
  it("accepts one ed25519 public key line (type and base64), with or without the final newline", () => {
    expect(parseNewHostKey(`${fresh}\n`, current, "vm")).toBe(fresh);
    expect(parseNewHostKey(fresh, current, "vm")).toBe(fresh);
  });
  const rsa = execFileSync("sh", ["-c", "d=$(mktemp -d) && ssh-keygen -q -t rsa -b 1024 -N '' -f $d/k && cat $d/k.pub && rm -r $d"], { encoding: "utf8" });
  for (const [label, out] of [
    ["nothing", ""],
    ["a comment after the key", `${fresh} root@vm\n`],
    ["two keys", `${fresh}\n${bare(ed25519KeyPair().public)}\n`],
    ["a blank line after it", `${fresh}\n\n`],
    ["a CR", `${fresh}\r\n`],
    ["a leading space", ` ${fresh}\n`],
    ["an RSA key", rsa],
    ["a private key", ed25519KeyPair().private],
    ["a truncated key", `${fresh.slice(0, -4)}\n`],
    ["terminal escapes", `\x1b]0;owned\x07${fresh}\n`],
  ] as const) {
    it(`refuses ${label}`, () => {
      expect(() => parseNewHostKey(out, current, "vm")).toThrow(ProviderError);
    });
  }
  it("refuses the key the VM already has (the one from user-data), with or without its comment", () => {
    expect(() => parseNewHostKey(`${bare(current)}\n`, current, "vm")).toThrow(/the key in its user-data/);
  });
  it("shows what the VM printed without its control characters", () => {
    try {
      parseNewHostKey("\x1b[2Jhello\x07\n", current, "vm");
      expect.unreachable();
    } catch (err) {
      expect((err as ProviderError).notes.join("\n")).toBe('it printed: "?[2Jhello?"');
    }
  });
});
