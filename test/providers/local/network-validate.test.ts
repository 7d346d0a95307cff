import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { BIN, tempHome, writeUserConfig } from "../../helpers/cli.js";

// local.network nat needs passt; without it `up` stops at validation with the fix, before anything is created, and
// never falls back to QEMU's own nat (which hands the VM this machine's loopback). The built spuff runs with a PATH of
// only the programs given; with no image cached, a VM that passes the network checks stops at the image.
const t = tempHome();
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  t.cleanup();
});

function upWith(local: Record<string, unknown>, programs: Record<string, string> = {}) {
  writeUserConfig(t.env, stringify({ provider: "local", local }));
  const dir = mkdtempSync(join(tmpdir(), "spuff-path-"));
  dirs.push(dir);
  const base = { sh: "/bin/sh", "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "qemu-img": "/usr/bin/qemu-img", genisoimage: "/usr/bin/genisoimage" };
  for (const [name, target] of Object.entries({ ...base, ...programs })) symlinkSync(target, join(dir, name));
  return spawnSync(process.execPath, [BIN, "up", "demo"], { env: { ...t.env, PATH: dir }, cwd: t.home, encoding: "utf8", timeout: 20_000 });
}

describe.runIf(process.arch === "x64")("local.network checks before anything is created", () => {
  it("nat (the default) without passt: a clear error with the fix", () => {
    const r = upWith({});
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("error: passt is not installed: local.network nat (the default) gives the VM its network through passt");
    expect(r.stderr).toContain("sudo apt-get install passt");
    expect(r.stderr).toContain("local.network: none");
  });

  it("none needs no passt", () => {
    const r = upWith({ network: "none" });
    expect(r.stderr).not.toContain("passt");
    expect(r.stderr).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
  });

  it("nat with guest_forwards: refused (nat reaches nothing of this machine)", () => {
    const r = upWith({ network: "nat", guest_forwards: ["10.0.2.100:22=127.0.0.1:2222"] }, { passt: "/usr/bin/passt" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("error: local.guest_forwards needs local.network: none");
  });

  it("nat with passt installed passes the network checks", () => {
    const r = upWith({ network: "nat" }, { passt: "/usr/bin/passt" });
    expect(r.stderr).not.toContain("passt");
    expect(r.stderr).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
  });
});
