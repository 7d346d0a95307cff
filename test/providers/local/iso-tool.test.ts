import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BIN, tempHome } from "../../helpers/cli.js";

// The seed ISO is written by whichever of genisoimage (Debian), mkisofs (cdrtools) or xorrisofs (xorriso, Homebrew)
// is installed. The built spuff runs with a PATH of only the programs given; with no image cached, `up` stops at
// validation, before anything is created.
const t = tempHome();
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  t.cleanup();
});

function upWith(programs: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "spuff-path-"));
  dirs.push(dir);
  for (const [name, target] of Object.entries({ sh: "/bin/sh", "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "qemu-img": "/usr/bin/qemu-img", passt: "/usr/bin/passt", ...programs })) {
    symlinkSync(target, join(dir, name));
  }
  return spawnSync(process.execPath, [BIN, "up", "demo"], { env: { ...t.env, PATH: dir }, cwd: t.home, encoding: "utf8", timeout: 20_000 });
}

describe.runIf(process.arch === "x64")("the seed ISO tool", () => {
  it("none of them: says which ones would do and how to install one", () => {
    const r = upWith({});
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("error: no tool to write the cloud-init seed ISO (one of genisoimage, mkisofs, xorrisofs)");
    expect(r.stderr).toContain("macOS: `brew install xorriso`");
  });

  it("mkisofs alone is enough (cdrtools has no genisoimage)", () => {
    const r = upWith({ mkisofs: "/usr/bin/genisoimage" });
    expect(r.stderr).not.toContain("seed ISO");
    expect(r.stderr).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
  });
});
