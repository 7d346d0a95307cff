import { describe, expect, it } from "vitest";
import { App } from "../../src/cli/app.js";
import { commands } from "../../src/cli/commands/index.js";
import { buildProgram } from "../../src/cli/main.js";
import { runCli, tempHome } from "../helpers/cli.js";

/** Every command path of the real program: ["up"], ["config", "init"], ... */
function commandPaths(): string[][] {
  const program = buildProgram(new App({ stdout: { write: () => true }, stderr: { write: () => true }, stdin: process.stdin, env: {}, cwd: "/" }), commands);
  const paths: string[][] = [];
  const walk = (cmd: typeof program, prefix: string[]) => {
    for (const sub of cmd.commands) {
      paths.push([...prefix, sub.name()]);
      walk(sub, [...prefix, sub.name()]);
    }
  };
  walk(program, []);
  return paths;
}

describe("--help", () => {
  const t = tempHome();
  const paths = commandPaths();

  it("finds the commands (the walk itself works)", () => {
    expect(paths).toContainEqual(["config", "init"]);
    expect(paths).toContainEqual(["image", "pull"]);
    expect(paths.length).toBeGreaterThan(12);
  });

  it.each(paths.map((p) => [p.join(" "), p]))("spuff %s --help has examples and no '(default: [])'", async (_name, path) => {
    const r = await runCli([...(path as string[]), "--help"], { env: t.env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Examples:");
    expect(r.stdout).not.toContain("(default: [])");
  });

  it("image pull says which images are deleted: a downloaded one that fails the check, never a cached one", async () => {
    const r = await runCli(["image", "pull", "--help"], { env: t.env });
    expect(r.stdout).toMatch(/has no line for is refused\s+before it is downloaded/);
    expect(r.stdout).toMatch(/a downloaded image whose SHA512 differs is deleted/);
  });

  it("reap names every reason a VM is reaped for, interrupted included", async () => {
    const r = await runCli(["reap", "--help"], { env: t.env });
    for (const reason of ["interrupted", "expired", "idle-stopped", "stopped", "gone"]) expect(r.stdout).toMatch(new RegExp(`^  ${reason} `, "m"));
  });
});

describe("an unknown provider gets spuff's own message", () => {
  const t = tempHome();

  it("--provider foo names the flag and lists the providers, with no zod wording", async () => {
    const r = await runCli(["--provider", "foo", "ls"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('error: --provider: unknown provider "foo"\nhint: valid providers: local, hetzner, aws\n');
  });

  it("SPUFF_PROVIDER=foo the same, naming the variable", async () => {
    const r = await runCli(["ls"], { env: { ...t.env, SPUFF_PROVIDER: "foo" } });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('error: SPUFF_PROVIDER: unknown provider "foo"\nhint: valid providers: local, hetzner, aws\n');
  });

  it("--provider wins over a bad SPUFF_PROVIDER, as in the config's precedence", async () => {
    const r = await runCli(["--provider", "local", "ls", "--json"], { env: { ...t.env, SPUFF_PROVIDER: "foo" } });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
  });
});
