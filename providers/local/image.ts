import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chownSync, existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { UserError } from "../../src/core/errors.js";
import { sudoInvoker } from "../../src/core/state.js";
import { pulledImageDir } from "./pull.js";

/** The image recipe (a shell script shipped next to this file, in source and build alike). */
export function recipePath(): string {
  for (const rel of ["./build-image.sh", "../../../providers/local/build-image.sh"]) {
    const p = new URL(rel, import.meta.url).pathname;
    if (existsSync(p)) return p;
  }
  throw new Error("providers/local/build-image.sh is missing from this installation");
}

/** Built images are cached by the recipe's hash: a changed recipe means a new image. */
export function recipeHash(): string {
  return createHash("sha256").update(readFileSync(recipePath())).digest("hex").slice(0, 12);
}

export function builtImageDir(cacheDir: string): string {
  return join(cacheDir, "images", `debian-12-${recipeHash()}`);
}

/**
 * Under sudo, an image written into the invoking user's cache (see cacheDir) is handed to that user: the image and
 * every directory above it, up to their home, that root created.
 */
export function giveToInvoker(dir: string, env: NodeJS.ProcessEnv): void {
  const who = sudoInvoker(env);
  const inside = (p: string) => who !== undefined && p !== who.home && !relative(who.home, p).startsWith("..");
  if (!who || !inside(dir)) return;
  spawnSync("chown", ["-R", `${who.uid}:${who.gid}`, dir]);
  for (let p = dirname(dir); inside(p); p = dirname(p)) if (statSync(p).uid === 0) chownSync(p, who.uid, who.gid);
}

export interface BaseImage {
  disk: string;
  /** Direct kernel boot (built images); absent for a cloud image that boots through its own bootloader. */
  kernel?: string;
  initrd?: string;
  description: string;
}

function fromDir(dir: string): BaseImage | undefined {
  const disk = join(dir, "disk.qcow2");
  if (!existsSync(disk)) return undefined;
  return { disk, kernel: join(dir, "vmlinuz"), initrd: join(dir, "initrd.img"), description: `built image ${dir}` };
}

/**
 * The base image: `local.image` (a directory from `spuff image build`, or a cloud .qcow2 file), else the built image
 * for the current recipe, else the pulled Debian cloud image. Refuses with the commands that get one when there is none.
 */
export function findImage(cacheDir: string, configured?: string): BaseImage {
  if (configured) {
    if (!existsSync(configured)) {
      throw new UserError(`local.image ${configured} does not exist`, { hint: "build one with `spuff image build`, or fix the path" });
    }
    if (statSync(configured).isDirectory()) {
      const img = fromDir(configured);
      if (!img) throw new UserError(`${configured} has no disk.qcow2`, { hint: "point local.image at a directory made by `spuff image build`" });
      return img;
    }
    return { disk: configured, description: `image ${configured}` };
  }
  const built = fromDir(builtImageDir(cacheDir));
  if (built) return built;
  const pulled = join(pulledImageDir(cacheDir), "disk.qcow2");
  if (existsSync(pulled)) return { disk: pulled, description: `Debian 12 genericcloud (SHA512 verified) ${pulled}` };
  throw new UserError("no local VM image yet", {
    hint: [
      "download Debian's official cloud image, verified against its SHA512SUMS: `spuff image pull`",
      "or, offline, build one (2 to 3 minutes, needs root and the Debian mirror): `sudo spuff image build`",
    ],
  });
}
