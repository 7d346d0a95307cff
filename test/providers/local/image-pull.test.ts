import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { arch } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runCli, tempHome } from "../../helpers/cli.js";

// `spuff image pull` against a loopback HTTP server laid out like Debian's cloud image directory (an image file and
// SHA512SUMS): the real download, hashing and verification code, with the checksum file made to match or not.
const ARCH = arch() === "arm64" ? "arm64" : "amd64";
/** The default release, local.image: debian-13 (trixie). */
const NAME = `debian-13-genericcloud-${ARCH}.qcow2`;
const image = randomBytes(3 * 1024 * 1024 + 17);
const goodSum = createHash("sha512").update(image).digest("hex");
let sums = "";
let server: Server;
let base = "";

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === "/cloud/SHA512SUMS") return res.end(sums);
    if (req.url === `/cloud/${NAME}` || req.url === `/cloud/debian-12-genericcloud-${ARCH}.qcow2`) {
      res.writeHead(200, { "content-length": String(image.length) });
      return res.end(image);
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}/cloud/`;
});
afterAll(() => new Promise((r) => server.close(r)));

let t: ReturnType<typeof tempHome>;
beforeEach(() => {
  t = tempHome();
  return () => t.cleanup();
});
const images = () => join(t.env.XDG_CACHE_HOME as string, "spuff", "images");

describe("spuff image pull", () => {
  it("downloads the image, verifies it against SHA512SUMS and caches it for spuff up", async () => {
    sums = `${"0".repeat(128)}  debian-12-genericcloud-other.qcow2\n${goodSum}  ${NAME}\n`;
    const r = await runCli(["image", "pull", "--url", base], { env: t.env });
    expect(r.stderr).toContain("✓ verify SHA512");
    expect(r.stderr).toContain("100% of 3 MiB");
    expect(r.code).toBe(0);
    const dir = join(images(), NAME.replace(/\.qcow2$/, ""));
    expect(r.stdout).toBe(`image ready: ${dir}\n`);
    expect(createHash("sha512").update(readFileSync(join(dir, "disk.qcow2"))).digest("hex")).toBe(goodSum);
    const again = await runCli(["image", "pull", "--url", base], { env: t.env });
    expect(again.stderr).toContain("already pulled and verified");
  });

  it("refuses and deletes an image whose checksum differs", async () => {
    sums = `${createHash("sha512").update("something else").digest("hex")}  ${NAME}\n`;
    const r = await runCli(["image", "pull", "--url", base], { env: t.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${NAME} does not match Debian's SHA512SUMS: refusing it (deleted)`);
    expect(r.stderr).toContain(`got      ${goodSum}`);
    expect(readdirSync(images())).toEqual([]);
  });

  it("refuses an image that SHA512SUMS does not list, before downloading it", async () => {
    sums = `${goodSum}  debian-12-genericcloud-other.qcow2\n`;
    const r = await runCli(["image", "pull", "--url", base], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`has no checksum for ${NAME}: refusing an image that cannot be verified`);
    expect(existsSync(images())).toBe(false);
  });

  it("pulls the release local.image names (debian-12), and explains that a path cannot be pulled", async () => {
    const config = (image: string) => {
      mkdirSync(join(t.env.XDG_CONFIG_HOME as string, "spuff"), { recursive: true });
      writeFileSync(join(t.env.XDG_CONFIG_HOME as string, "spuff", "config.yaml"), `local:\n  image: ${image}\n`);
    };
    config("debian-12");
    sums = `${goodSum}  debian-12-genericcloud-${ARCH}.qcow2\n`;
    const r = await runCli(["image", "pull", "--url", base], { env: t.env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`image ready: ${join(images(), `debian-12-genericcloud-${ARCH}`)}\n`);
    config("/srv/images/ubuntu-24.04.qcow2");
    const path = await runCli(["image", "pull", "--url", base], { env: t.env });
    expect(path.code).toBe(1);
    expect(path.stderr).toContain("local.image is /srv/images/ubuntu-24.04.qcow2, a path, not a release spuff can build or pull");
    expect(path.stderr).toContain("set local.image to one of debian-13, debian-12");
  });

  it("explains a missing directory", async () => {
    const r = await runCli(["image", "pull", "--url", `${base}nope/`], { env: t.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("downloading SHA512SUMS from");
    expect(r.stderr).toContain("HTTP 404");
  });
});
