import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, unlinkSync, watch, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

// The VM side of the host key rotation (docs/adr/0008-host-key-rotation.md): cloud-init/files/spuff-rotate-host-key.sh
// run as `up` runs it, one `prepare` whose next steps come on its stdin, on a directory standing in for /etc/ssh and
// /var/lib/cloud (the SPUFF_* variables the test stand-in VM uses too). A watcher stands in for `systemctl reload`.
const SCRIPT = "cloud-init/files/spuff-rotate-host-key.sh";
const publicOf = (file: string) => execFileSync("cut", ["-d", " ", "-f1,2", file], { encoding: "utf8" }).trim();

let dir: string;
let env: NodeJS.ProcessEnv;
let reloads: number;
let watcher: ReturnType<typeof watch>;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "spuff-rotate-script-"));
  mkdirSync(join(dir, "keys"));
  mkdirSync(join(dir, "cloud", "instances", "i-1"), { recursive: true });
  for (const f of ["user-data.txt", "user-data.txt.i", "cloud-config.txt", "obj.pkl"]) writeFileSync(join(dir, "cloud", "instances", "i-1", f), "old key\n");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", join(dir, "keys", "key")]);
  env = {
    PATH: process.env.PATH,
    SPUFF_HOST_KEY: join(dir, "keys", "key"),
    SPUFF_CLOUD_DIR: join(dir, "cloud"),
    SPUFF_CLOUD_RUN_DIR: join(dir, "run"),
    SPUFF_SSHD_RELOAD_REQUEST: join(dir, "reload"),
  };
  reloads = 0;
  watcher = watch(dir, (_, name) => {
    if (name === "reload" && existsSync(join(dir, "reload"))) {
      reloads++;
      unlinkSync(join(dir, "reload"));
    }
  });
});
afterEach(() => {
  watcher.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The script's `prepare`, its stdin open; `line()` is its next line of output. */
function prepare(): { child: ChildProcess; line(): Promise<string>; exit: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn("bash", [SCRIPT, "prepare"], { env, stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let stderr = "";
  let wake = () => {};
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
    wake();
  });
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{ code: number | null; stderr: string }>((r) => child.once("close", (code) => r({ code, stderr })));
  return {
    child,
    async line() {
      while (!out.includes("\n")) await new Promise<void>((r) => (wake = r));
      const [first] = out.split("\n");
      out = out.slice(first.length + 1);
      return first;
    },
    exit,
  };
}

describe("the rotate-host-key script: prepare, then its steps on stdin", () => {
  it("prepare prints the new key and waits; commit installs it (one reload); finish removes the old key and user-data copies", async () => {
    const old = publicOf(join(dir, "keys", "key.pub"));
    const run = prepare();
    const next = await run.line();
    expect(next).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\S{43}$/);
    expect(next).not.toBe(old);
    // Nothing switched before spuff says so.
    expect(publicOf(join(dir, "keys", "key.pub"))).toBe(old);
    expect(reloads).toBe(0);
    run.child.stdin?.write(`commit ${next}\n`);
    expect(await run.line()).toBe(next);
    expect(publicOf(join(dir, "keys", "key.pub"))).toBe(next);
    expect(reloads).toBe(1);
    expect(readdirSync(join(dir, "keys")).sort()).toEqual(["key", "key.old", "key.pub"]);
    run.child.stdin?.end("finish\n");
    expect(await run.exit).toEqual({ code: 0, stderr: "" });
    expect(readdirSync(join(dir, "keys")).sort()).toEqual(["key", "key.pub"]);
    expect(readdirSync(join(dir, "cloud", "instances", "i-1"))).toEqual([]);
  });

  it("the end of stdin after prepare changes nothing but the prepared key; abort then removes it", async () => {
    const old = publicOf(join(dir, "keys", "key.pub"));
    const run = prepare();
    await run.line();
    run.child.stdin?.end();
    expect((await run.exit).code).toBe(0);
    expect(publicOf(join(dir, "keys", "key.pub"))).toBe(old);
    expect(reloads).toBe(0);
    expect(spawnSync("bash", [SCRIPT, "abort"], { env }).status).toBe(0);
    expect(readdirSync(join(dir, "keys")).sort()).toEqual(["key", "key.pub"]);
  });

  it("a commit of another key than the prepared one, or an unknown step, fails and switches nothing", async () => {
    const old = publicOf(join(dir, "keys", "key.pub"));
    for (const step of ["commit ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther", "reboot"]) {
      const run = prepare();
      await run.line();
      run.child.stdin?.end(`${step}\n`);
      const { code, stderr } = await run.exit;
      expect(code).not.toBe(0);
      expect(stderr).toMatch(step === "reboot" ? /unknown step on stdin/ : /the prepared key is not the one given/);
      expect(publicOf(join(dir, "keys", "key.pub"))).toBe(old);
    }
    expect(reloads).toBe(0);
  });
});
