import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";

const SCRIPT = resolve("scripts/install-deps.sh");
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A PATH of only the given programs: fakes (a shell script each) and links to this machine's real ones. */
function pathWith(fakes: Record<string, string>, real: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), "spuff-path-"));
  dirs.push(dir);
  for (const [name, body] of Object.entries(fakes)) {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  }
  for (const name of real) {
    const which = spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).stdout.trim();
    symlinkSync(which, join(dir, name));
  }
  return dir;
}

/** Runs the script with exactly this PATH: nothing on it can install anything (no apt-get, no dpkg). */
function run(path: string) {
  const r = spawnSync("/bin/bash", [SCRIPT], { env: { PATH: path, HOME: tmpdir() }, encoding: "utf8", timeout: 10_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("scripts/install-deps.sh checks Node.js before anything else", () => {
  it("stops at once with what to install when there is no node on PATH", () => {
    const r = run(pathWith({}));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("spuff needs Node.js 20 or newer and npm (no node on PATH)");
    expect(r.stderr).toContain("Debian 13 (trixie):   apt-get install nodejs npm");
    expect(r.stderr).toMatch(/Debian 12 \(bookworm\): its nodejs package is 18, too old; install Node\.js 20\+ from upstream/);
    // It stopped before looking at packages: no "command not found" for dpkg-query, uname or apt-get.
    expect(r.stderr).not.toMatch(/not found/);
    expect(r.stdout).toBe("");
  });

  it("stops when node is older than 20 (Debian 12's nodejs)", () => {
    const r = run(pathWith({ node: "echo v18.19.0", npm: "echo 9.2.0" }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("(found node v18.19.0)");
    expect(r.stderr).not.toMatch(/not found/);
  });

  it("stops when node 20 has no npm (Debian's nodejs package comes without it)", () => {
    const r = run(pathWith({ node: "echo v20.19.2" }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("node v20.19.2 has no npm next to it");
  });

  it("goes on to the packages with Node.js 20 and npm", () => {
    // dpkg-query reports every package installed, so the script ends with "all present" and installs nothing.
    const r = run(pathWith({ node: "echo v20.19.2", npm: "echo 9.2.0", "dpkg-query": "printf 'install ok installed'" }, ["uname", "grep", "id"]));
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("install-deps: all present\n");
    expect(r.code).toBe(0);
  });
});
