import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chownSync, existsSync, readFileSync, statSync } from "node:fs";
import { arch } from "node:os";
import { dirname, join, relative } from "node:path";
import { UserError } from "../../src/core/errors.js";
import { sudoInvoker } from "../../src/core/state.js";

/** The image recipe (a shell script shipped next to this file, in source and build alike). */
export function recipePath(): string {
  for (const rel of ["./build-image.sh", "../../../providers/local/build-image.sh"]) {
    const p = new URL(rel, import.meta.url).pathname;
    if (existsSync(p)) return p;
  }
  throw new Error("providers/local/build-image.sh is missing from this installation");
}

/** The releases `local.image` can name: spuff builds them (`spuff image build`) or pulls Debian's cloud image of them. */
export const RELEASES = {
  "debian-13": { suite: "trixie", title: "Debian 13 (trixie)" },
  "debian-12": { suite: "bookworm", title: "Debian 12 (bookworm)" },
} as const;
export type Release = keyof typeof RELEASES;

export function isRelease(image: string): image is Release {
  return Object.hasOwn(RELEASES, image);
}

/** The release `spuff image build`/`pull` make: local.image, which must name one (not a path). */
export function configuredRelease(image: string): Release {
  if (isRelease(image)) return image;
  throw new UserError(`local.image is ${image}, a path, not a release spuff can build or pull`, {
    hint: `set local.image to one of ${Object.keys(RELEASES).join(", ")} (spuff config show), then run this again`,
  });
}

/** Built images are cached by the recipe's hash: a changed recipe means a new image. */
export function recipeHash(): string {
  return createHash("sha256").update(readFileSync(recipePath())).digest("hex").slice(0, 12);
}

export function builtImageDir(cacheDir: string, release: Release): string {
  return join(cacheDir, "images", `${release}-${recipeHash()}`);
}

/** Debian's genericcloud image file of a release for this machine's architecture (`spuff image pull`). */
export function cloudImageName(release: Release): string {
  return `${release}-genericcloud-${arch() === "arm64" ? "arm64" : "amd64"}.qcow2`;
}

export function pulledImageDir(cacheDir: string, release: Release): string {
  return join(cacheDir, "images", cloudImageName(release).replace(/\.qcow2$/, ""));
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
 * The base image for `local.image`: a release (debian-13, the default, or debian-12): the image built for it with the
 * current recipe, else Debian's pulled cloud image of it; or a path: a directory from `spuff image build`, or a cloud
 * .qcow2 file (Ubuntu 24.04's, say). Refuses with the commands that get one when there is none.
 */
export function findImage(cacheDir: string, configured: string): BaseImage {
  if (isRelease(configured)) {
    const built = fromDir(builtImageDir(cacheDir, configured));
    if (built) return built;
    const pulled = join(pulledImageDir(cacheDir, configured), "disk.qcow2");
    if (existsSync(pulled)) return { disk: pulled, description: `${RELEASES[configured].title} genericcloud (SHA512 verified) ${pulled}` };
    throw new UserError(`no local VM image of ${RELEASES[configured].title} (local.image: ${configured}) yet`, {
      hint: [
        "download Debian's official cloud image, verified against its SHA512SUMS: `spuff image pull`",
        "or, offline, build one (about 3 minutes, needs root and the Debian mirror): `sudo spuff image build`",
      ],
    });
  }
  if (!existsSync(configured)) {
    throw new UserError(`local.image ${configured} is neither a release (${Object.keys(RELEASES).join(", ")}) nor an existing path`, {
      hint: "name a release, build one with `spuff image build`, or fix the path",
    });
  }
  if (statSync(configured).isDirectory()) {
    const img = fromDir(configured);
    if (!img) throw new UserError(`${configured} has no disk.qcow2`, { hint: "point local.image at a directory made by `spuff image build`" });
    return img;
  }
  return { disk: configured, description: `image ${configured}` };
}
