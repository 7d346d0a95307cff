import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { userInfo } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cloudImageName } from "../../../providers/local/image.js";
import { cacheDir } from "../../../src/core/state.js";
import { runCli, tempHome } from "../../helpers/cli.js";

// `sudo spuff image build|pull` must leave the image where `spuff up` as the user looks: sudo sets HOME to root's, so
// spuff goes by SUDO_USER. Run as root with the environment sudo gives (Debian's sudoers: HOME=/root, SUDO_USER,
// SUDO_UID, SUDO_GID, no XDG_*), for the test user spuff-test; the image comes from a loopback mirror.
const USER = "spuff-test";
const uid = Number(execFileSync("id", ["-u", USER], { encoding: "utf8" }));
const gid = Number(execFileSync("id", ["-g", USER], { encoding: "utf8" }));
const home = execFileSync("getent", ["passwd", USER], { encoding: "utf8" }).split(":")[5];
const NAME = cloudImageName("debian-13");
const image = randomBytes(64 * 1024);
let server: Server;
let base = "";
const t = tempHome();
const createdCache = !existsSync(join(home, ".cache"));
const underSudo: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: userInfo().homedir, SUDO_USER: USER, SUDO_UID: String(uid), SUDO_GID: String(gid), CI: "true", NO_COLOR: "1", SPUFF_STATE_DIR: join(t.home, "state") };

beforeAll(async () => {
  expect(existsSync(join(home, ".cache", "spuff"))).toBe(false); // never touch a real cache
  const sums = `${createHash("sha512").update(image).digest("hex")}  ${NAME}\n`;
  server = createServer((req, res) => {
    if (req.url === "/cloud/SHA512SUMS") return res.end(sums);
    if (req.url === `/cloud/${NAME}`) return res.end(image);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}/cloud/`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(join(home, createdCache ? ".cache" : ".cache/spuff"), { recursive: true, force: true });
  t.cleanup();
});

describe.runIf(process.getuid?.() === 0)("the image cache under sudo", () => {
  it("is the invoking user's cache, unless SPUFF_CACHE_DIR or XDG_CACHE_HOME say otherwise", () => {
    expect(cacheDir(underSudo)).toBe(join(home, ".cache", "spuff"));
    expect(cacheDir({ ...underSudo, SPUFF_CACHE_DIR: "/srv/c" })).toBe("/srv/c");
    expect(cacheDir({ ...underSudo, XDG_CACHE_HOME: "/srv/x" })).toBe("/srv/x/spuff");
    // `sudo -H` or `sudo -E` with HOME kept: HOME is what it says.
    expect(cacheDir({ ...underSudo, HOME: home })).toBe(join(home, ".cache", "spuff"));
    // Not root, or sudo to root itself: no change.
    expect(cacheDir({ ...underSudo, SUDO_USER: "root", SUDO_UID: "0" })).toBe(join(userInfo().homedir, ".cache", "spuff"));
    // SUDO_UID must be the user's own uid.
    expect(cacheDir({ ...underSudo, SUDO_UID: "4242" })).toBe(join(userInfo().homedir, ".cache", "spuff"));
  });

  it("`sudo spuff image pull` writes it there, owned by the user, and the user's spuff finds the same image", async () => {
    const r = await runCli(["image", "pull", "--url", base, "--json"], { env: underSudo });
    expect(r.stderr).not.toContain("error");
    expect(r.code).toBe(0);
    const dir = JSON.parse(r.stdout).image as string;
    expect(dir).toBe(join(home, ".cache", "spuff", "images", NAME.replace(/\.qcow2$/, "")));
    for (const p of [join(dir, "disk.qcow2"), dir, join(home, ".cache", "spuff", "images"), join(home, ".cache", "spuff"), join(home, ".cache")]) {
      expect({ p, uid: statSync(p).uid, gid: statSync(p).gid }).toEqual({ p, uid, gid });
    }
    // The user, without sudo: the same directory, already verified (as `spuff up` would find it).
    const user = await runCli(["image", "pull", "--url", base], { env: { PATH: process.env.PATH, HOME: home, CI: "true", SPUFF_STATE_DIR: join(t.home, "state") } });
    expect(user.code).toBe(0);
    expect(user.stdout).toBe(`image ready: ${dir}\n`);
    expect(user.stderr).toContain("already pulled and verified");
  });
});
