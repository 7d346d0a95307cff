import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { kvmUnavailable } from "../../../providers/local/qemu.js";
import { BIN, runCli, tempHome } from "../../helpers/cli.js";

// Without read/write access to /dev/kvm, `spuff up` says that the VM will run under software emulation and how to
// fix it, on stderr only. The built spuff runs as the unprivileged test user spuff-test (this machine's /dev/kvm is
// root's, mode 600); with no image in its cache, `up` stops at validation, before anything is created.
const USER = "spuff-test";
const uid = Number(execFileSync("id", ["-u", USER], { encoding: "utf8" }));
const gid = Number(execFileSync("id", ["-g", USER], { encoding: "utf8" }));
const home = mkdtempSync(join(tmpdir(), "spuff-kvm-"));
chownSync(home, uid, gid);
afterAll(() => rmSync(home, { recursive: true, force: true }));

const asUser = (argv: string[]) =>
  spawnSync(process.execPath, [BIN, ...argv], {
    uid,
    gid,
    cwd: home,
    env: { PATH: process.env.PATH, HOME: home, CI: "true", NO_COLOR: "1" },
    encoding: "utf8",
    timeout: 20_000,
  });

describe("kvmUnavailable", () => {
  it("names a missing device", () => {
    expect(kvmUnavailable("/nonexistent/kvm")).toMatch(/^\/nonexistent\/kvm does not exist/);
  });
});

describe.runIf(process.getuid?.() === 0 && existsSync("/dev/kvm"))("spuff up without access to /dev/kvm", () => {
  it("prints one note with the kvm group fix on stderr, and leaves --json's stdout JSON events only", () => {
    expect(spawnSync("test", ["-r", "/dev/kvm", "-a", "-w", "/dev/kvm"], { uid, gid }).status).not.toBe(0); // precondition

    const plain = asUser(["up", "demo"]);
    expect(plain.stderr).toContain(
      "note: KVM cannot be used, so the VM runs under software emulation (TCG, several times slower): no read/write access to /dev/kvm: add yourself to its group (`sudo usermod -aG kvm $USER`, then log in again)",
    );
    expect(plain.stderr).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
    expect(plain.status).toBe(1);

    const json = asUser(["up", "demo", "--json"]);
    expect(json.stderr.match(/^note: KVM cannot be used/gm)).toHaveLength(1);
    const events = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(events.at(-1).error.message).toBe("no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
    expect(json.stdout).not.toContain("KVM");
  });

  it("says nothing where /dev/kvm is usable (root here)", async () => {
    const t = tempHome();
    const r = await runCli(["up", "demo"], { env: t.env });
    t.cleanup();
    expect(r.stderr).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
    expect(r.stderr).not.toContain("note:");
  });
});
