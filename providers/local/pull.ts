import { createHash } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProviderError, UserError } from "../../src/core/errors.js";
import type { Progress } from "../../src/core/provider.js";
import { cloudImageName, pulledImageDir, RELEASES, type Release } from "./image.js";

/**
 * `spuff image pull`: Debian's official genericcloud image, downloaded once and verified against Debian's published
 * SHA512SUMS. An image whose checksum is missing or differs is refused and deleted.
 */
export function debianCloudUrl(release: Release): string {
  return `https://cloud.debian.org/images/cloud/${RELEASES[release].suite}/latest/`;
}

async function get(url: string, what: string): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new ProviderError(`cannot download ${what} from ${url}: ${(err as Error).cause ?? (err as Error).message}`, {
      hint: "check the network, or build an image offline with `sudo spuff image build`",
    });
  }
  if (!res.ok || !res.body) throw new ProviderError(`downloading ${what} from ${url} failed: HTTP ${res.status}`, { hint: "check --url (it must point at a directory with SHA512SUMS)" });
  return res;
}

export async function pullImage(o: { cacheDir: string; release: Release; baseUrl?: string; force: boolean; progress: Progress }): Promise<string> {
  const base = (o.baseUrl ?? debianCloudUrl(o.release)).replace(/\/?$/, "/");
  const name = cloudImageName(o.release);
  const dir = pulledImageDir(o.cacheDir, o.release);
  const disk = join(dir, "disk.qcow2");
  if (existsSync(disk) && !o.force) {
    o.progress.info(`already pulled and verified: ${disk} (--force downloads it again)`);
    return dir;
  }
  o.progress.phase("checksums");
  const sums = await (await get(`${base}SHA512SUMS`, "SHA512SUMS")).text();
  const expected = sums
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .find(([, file]) => file?.replace(/^\*/, "") === name)?.[0]
    ?.toLowerCase();
  if (!expected || !/^[0-9a-f]{128}$/.test(expected)) {
    throw new UserError(`SHA512SUMS at ${base} has no checksum for ${name}: refusing an image that cannot be verified`, {
      hint: "use Debian's image directory (the default), or build an image with `sudo spuff image build`",
    });
  }

  o.progress.phase(`download ${name}`);
  const res = await get(`${base}${name}`, name);
  const total = Number(res.headers.get("content-length") ?? 0);
  mkdirSync(join(o.cacheDir, "images"), { recursive: true });
  const tmp = `${dir}.download-${process.pid}`;
  const hash = createHash("sha512");
  const out = createWriteStream(tmp);
  let got = 0;
  let shown = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      got += chunk.length;
      if (!out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
      const pct = total ? Math.floor((got / total) * 10) : 0;
      if (total && pct > shown) {
        shown = pct;
        o.progress.info(`${pct * 10}% of ${Math.round(total / 2 ** 20)} MiB`);
      }
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  } catch (err) {
    out.destroy();
    rmSync(tmp, { force: true });
    throw new ProviderError(`the download of ${name} broke off: ${(err as Error).message}`, { hint: "run `spuff image pull` again" });
  }
  o.progress.phase("verify SHA512");
  const actual = hash.digest("hex");
  if (actual !== expected) {
    rmSync(tmp, { force: true });
    throw new ProviderError(`${name} does not match Debian's SHA512SUMS: refusing it (deleted)`, {
      notes: [`expected ${expected}`, `got      ${actual}`],
      hint: "the download was corrupted or tampered with; run `spuff image pull` again, or use another mirror with --url",
    });
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  renameSync(tmp, disk);
  writeFileSync(join(dir, "SHA512"), `${actual}  ${name}\n`);
  writeFileSync(join(dir, "SOURCE"), `${base}${name}\n`);
  return dir;
}
