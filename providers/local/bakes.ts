import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { ProviderError } from "../../src/core/errors.js";
import type { Image, ImageSpec, Progress } from "../../src/core/provider.js";
import { writeFileAtomic } from "../../src/core/state.js";
import type { BaseImage } from "./image.js";
import { livePid, qmp } from "./qemu.js";

/**
 * Baked images of the local provider (docs/images.md, docs/providers/local.md): a qcow2 base under
 * `<cache>/bakes/<id>/`: `disk.qcow2`, the bake VM's overlay flattened onto its base (`qemu-img convert`, so it no
 * longer depends on it), and `meta.json` with the labels and the base's kernel and initrd (a built image boots them
 * directly). New VMs get an overlay on that disk as on any base image. It costs disk space only.
 */

interface BakeMeta {
  id: string;
  name: string;
  labels: Record<string, string>;
  createdAt: string;
  status: "creating" | "available";
  base: BaseImage;
}

export class LocalBakes {
  constructor(private readonly root: string) {}

  private dir(id: string): string {
    return join(this.root, id);
  }

  private read(id: string): BakeMeta | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dir(id), "meta.json"), "utf8")) as BakeMeta;
    } catch {
      return undefined;
    }
  }

  private toImage(m: BakeMeta): Image {
    const disk = join(this.dir(m.id), "disk.qcow2");
    const size = m.status === "available" && existsSync(disk) ? Math.round(statSync(disk).size / 1e7) / 100 : null;
    return { id: m.id, name: m.name, provider: "local", status: m.status, labels: { ...m.labels }, createdAt: m.createdAt, sizeGB: size, pricePerMonth: null };
  }

  list(): Image[] {
    if (!existsSync(this.root)) return [];
    return readdirSync(this.root)
      .map((id) => this.read(id))
      .filter((m): m is BakeMeta => m !== undefined)
      .map((m) => this.toImage(m));
  }

  /** The base image a VM from this bake boots: its flattened disk, with the kernel and initrd of the base it came from. */
  baseOf(image: Image): BaseImage {
    const m = this.read(image.id);
    if (m?.status !== "available") throw new ProviderError(`the baked image ${image.id} is not available here`, { hint: "`spuff image ls` lists the bakes" });
    return { ...m.base, disk: join(this.dir(m.id), "disk.qcow2"), description: `baked image ${m.name}` };
  }

  /**
   * Powers the guest down (ACPI through QMP; QEMU exits with it, `quit` after 2 minutes) and flattens its overlay into
   * a new base. The directory exists (status creating, with the labels) from the start, so a rollback finds it.
   */
  async create(vmDir: string, base: BaseImage, spec: ImageSpec, progress: Progress): Promise<Image> {
    const { signal } = spec;
    const pidfile = join(vmDir, "qemu.pid");
    progress.info("powering the bake VM down");
    await qmp(join(vmDir, "qmp.sock"), ["system_powerdown"]);
    const deadline = Date.now() + 120_000;
    while (livePid(pidfile) !== undefined) {
      signal?.throwIfAborted();
      if (Date.now() > deadline) {
        await qmp(join(vmDir, "qmp.sock"), ["quit"]);
        break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const id = `bake-${spec.labels["spuff/request-id"]?.slice(0, 12) ?? Date.now().toString(36)}`;
    const dir = this.dir(id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const meta: BakeMeta = { id, name: spec.name, labels: { ...spec.labels }, createdAt: new Date().toISOString(), status: "creating", base };
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
    const tmp = join(dir, "disk.qcow2.part");
    await new Promise<void>((resolve, reject) => {
      const child = spawn("qemu-img", ["convert", "-q", "-O", "qcow2", "-c", join(vmDir, "disk.qcow2"), tmp], { stdio: ["ignore", "ignore", "pipe"], signal });
      let err = "";
      child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
      child.once("error", reject);
      child.once("exit", (code) => (code === 0 ? resolve() : reject(new ProviderError(`qemu-img convert failed (exit ${code})`, { notes: [err.trim()] }))));
    });
    renameSync(tmp, join(dir, "disk.qcow2"));
    meta.status = "available";
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
    return this.toImage(meta);
  }

  delete(image: Image): void {
    rmSync(this.dir(image.id), { recursive: true, force: true });
  }

  setLabels(image: Image, labels: Record<string, string>): void {
    const m = this.read(image.id);
    if (!m) return;
    m.labels = { ...labels };
    writeFileAtomic(join(this.dir(m.id), "meta.json"), JSON.stringify(m, null, 2));
  }
}
