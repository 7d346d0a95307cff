import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runCli, tempHome } from "../helpers/cli.js";

let t: ReturnType<typeof tempHome>;
beforeEach(() => {
  t = tempHome();
});
afterEach(() => t.cleanup());

describe("spuff --help and --version", () => {
  it("prints the version from package.json", async () => {
    const { version } = (await import("../../package.json", { with: { type: "json" } })).default;
    expect(await runCli(["--version"], { env: t.env })).toEqual({ code: 0, stdout: `${version}\n`, stderr: "" });
  });

  it("lists every command, the global flags, exit codes and examples", async () => {
    const r = await runCli(["--help"], { env: t.env });
    expect(r.code).toBe(0);
    for (const cmd of ["up [options] [name]", "ls|list", "status [name]", "down|destroy", "config"]) {
      expect(r.stdout).toContain(cmd);
    }
    for (const flag of ["--provider <name>", "--config <file>", "--json", "-y, --yes", "-v, --verbose", "--version"]) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toContain("130  interrupted (Ctrl-C)");
    expect(r.stdout).toContain("$ spuff up ");
  });

  it("with no arguments and no terminal prints the help", async () => {
    const r = await runCli([], { env: t.env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: spuff [options] [command]");
  });

  it("every command's --help has examples", async () => {
    const help = await runCli(["--help"], { env: t.env });
    const commandsSection = help.stdout.split("Commands:\n")[1].split("\n\n")[0];
    const names = [...commandsSection.matchAll(/^ {2}([a-z-]+)[| ]/gm)].map((m) => m[1]).filter((n) => n !== "help");
    expect(names.length).toBeGreaterThanOrEqual(5);
    for (const name of names) {
      const r = await runCli([name, "--help"], { env: t.env });
      expect(r.code, name).toBe(0);
      expect(r.stdout, name).toMatch(/Examples:\n\s+\$ (sudo )?spuff /);
    }
  });

  it("up --help explains the name default, Ctrl-C and flags", async () => {
    const r = await runCli(["up", "--help"], { env: t.env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--ttl <duration>");
    expect(r.stdout).toContain("Ctrl-C rolls back");
  });
});

describe("bad input", () => {
  it("an unknown command exits 1 with a hint", async () => {
    const r = await runCli(["upp"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("unknown command 'upp'");
    expect(r.stderr).toContain("(Did you mean up?)");
  });

  it("an unknown flag exits 1", async () => {
    const r = await runCli(["ls", "--jsn"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("unknown option '--jsn'");
  });

  it("an invalid VM name is refused with the rule, before anything is created", async () => {
    const r = await runCli(["up", "Bad_Name"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error: invalid VM name "Bad_Name"');
    expect(r.stderr).toContain("hint: a VM name is 1-40 characters");
  });

  it("an unknown provider lists the valid ones", async () => {
    const r = await runCli(["--provider", "gcp", "ls"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("hint: valid providers: local, hetzner, aws");
  });

  it("errors are JSON under --json", async () => {
    const r = await runCli(["--json", "--provider", "gcp", "ls"], { env: t.env });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).error).toMatchObject({ type: "ConfigError", exitCode: 1 });
  });

  it("down without --yes and without a terminal refuses and changes nothing", async () => {
    const { StateStore } = await import("../../src/core/state.js");
    const store = new StateStore(`${t.env.XDG_STATE_HOME}/spuff`);
    await store.save({ name: "keepme", provider: "nosuch", user: "dev", createdAt: new Date().toISOString(), hostKey: "ssh-ed25519 AAAA" });
    const r = await runCli(["--provider", "local", "down", "keepme"], { env: t.env });
    expect(r.code).not.toBe(0);
    expect(store.read("keepme")).toBeDefined();
  });
});
