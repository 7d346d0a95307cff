import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { ProviderError, UserError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import type {
  CreateSpec,
  Image,
  ImageSpec,
  Placement,
  Progress,
  Provider,
  ProviderContext,
  ProviderFactory,
  SshEndpoint,
  StopReason,
  Vm,
  Volume,
  VolumeSpec,
} from "../../src/core/provider.js";
import { writeFileAtomic } from "../../src/core/state.js";
import { type BaseImage, builtImageDir, configuredRelease, findImage, giveToInvoker, RELEASES, recipePath } from "./image.js";
import { platform } from "node:os";
import { LocalBakes } from "./bakes.js";
import { type Accel, accelCandidates, freePort, hasCommand, kvmUnavailable, livePid, type Passt, portFree, qemuArgs, qemuBinary, qmp, startPasst, stopPasst, tiePasstToQemu, toMiB } from "./qemu.js";

interface Meta {
  name: string;
  labels: Record<string, string>;
  createdAt: string;
  sshPort: number;
  accel?: Accel;
  cpus: number;
  memoryMiB: number;
  /** The base image the overlay was made on (its kernel and initrd boot it again on `start`). */
  image?: BaseImage;
  /** The id of the workspace volume attached to this VM (it stays attached while the VM exists, stopped or not). */
  workspace?: string;
}

/**
 * A workspace volume: <stateDir>/local-workspaces/<id>/{meta.json,disk.qcow2}, beside the VM directories (so nothing
 * that removes a VM's directory can reach it). Made in a ".tmp-<id>" directory, labels first, and renamed into place
 * whole; deleted by renaming it to ".del-<id>" first: a crash never leaves a disk under an id without its labels.
 */
interface WorkspaceMeta {
  id: string;
  name: string;
  sizeGiB: number;
  labels: Record<string, string>;
  createdAt: string;
}

/** A workspace id: 10 hex digits, so that its disk serial "spuff-ws-<id>" fits virtio's 20 characters. */
const WORKSPACE_ID_RE = /^[0-9a-f]{10}$/;
const workspaceSerial = (id: string) => `spuff-ws-${id}`;

/**
 * Why a local VM whose QEMU is gone stopped, from the end of its serial console: the idle watcher writes its decision
 * to the kernel log, and a guest that shuts down ends with the kernel's "reboot: Power down". Without either, QEMU
 * ended under a running guest (host reboot or crash, QEMU killed): its disk is intact and `spuff start` boots it.
 */
function stopReason(consoleLog: string): StopReason {
  let tail = "";
  try {
    const buf = readFileSync(consoleLog);
    tail = buf.subarray(Math.max(0, buf.length - 16_384)).toString("utf8");
  } catch {
    return "host-restarted";
  }
  if (/spuff-idle: idle for [^\n]*poweroff/.test(tail)) return "idle";
  if (/reboot: Power down|spuff-idle: expired/.test(tail)) return "poweroff";
  return "host-restarted";
}

/**
 * Tools that write the NoCloud seed ISO, first found wins: genisoimage (Debian), mkisofs (cdrtools), xorrisofs
 * (xorriso, e.g. Homebrew). All take the same short options.
 */
const ISO_TOOLS = ["genisoimage", "mkisofs", "xorrisofs"];
const isoTool = (): string | undefined => ISO_TOOLS.find((t) => hasCommand(t));

/** How long a fresh guest must survive before its accelerator counts as working. */
const ACCEL_PROBE_MS = 10_000;

/**
 * Watches a freshly started QEMU: undefined once the guest shows it runs, else why it does not. Under TCG the guest
 * runs if QEMU is still alive after `ms`. A hardware accelerator must also bring the guest to its serial console
 * within `ms` (the kernel's first lines come within a second or two): on some hosts /dev/kvm is present but the guest
 * never gets anywhere, and QEMU neither exits nor logs anything for minutes (later: "KVM internal error"). Such a
 * QEMU is ended so the next accelerator can be tried.
 */
async function probe(child: ChildProcess, accel: Accel, files: { log: string; console: string }, ms: number): Promise<string | undefined> {
  let exitCode: number | null | undefined;
  child.once("exit", (code) => (exitCode = code));
  const lastLines = () => (existsSync(files.log) ? readFileSync(files.log, "utf8").trim().split("\n").slice(-3).join(" | ") : "");
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    if (exitCode !== undefined) return lastLines() || `QEMU exited with ${exitCode}`;
    if (accel !== "tcg" && existsSync(files.console) && statSync(files.console).size > 0) return undefined;
  }
  if (accel === "tcg") return undefined;
  const gone = new Promise((r) => (exitCode !== undefined ? r(undefined) : child.once("exit", r)));
  child.ref(); // keep the event loop alive until it is gone
  child.kill("SIGKILL");
  await gone; // its forwarded SSH port is free again for the next try
  return lastLines() || `the guest wrote nothing to its console within ${Math.round(ms / 1000)} s`;
}

class LocalProvider implements Provider {
  private readonly root: string;
  private readonly bakes: LocalBakes;
  private readonly workspaces: string;
  constructor(private readonly ctx: ProviderContext) {
    this.root = join(ctx.stateDir, "local");
    this.bakes = new LocalBakes(join(ctx.cacheDir, "bakes"));
    this.workspaces = join(ctx.stateDir, "local-workspaces");
  }

  info() {
    return {
      name: "local",
      description: "QEMU on this machine",
      features: { selfTerminatesOnPoweroff: true, billsWhenStopped: false, maxUserDataBytes: 1 << 20, userDataBinary: "bytes" as const, prices: true, free: true, volumes: true, images: true },
    };
  }

  /** With local.accel auto on Linux and no usable /dev/kvm, every VM runs under software emulation: say so, and why. */
  notices(): string[] {
    if (this.ctx.config.local.accel !== "auto" || platform() !== "linux") return [];
    const why = kvmUnavailable();
    return why ? [`KVM cannot be used, so the VM runs under software emulation (TCG, several times slower): ${why}`] : [];
  }

  private dir(name: string): string {
    return join(this.root, name);
  }

  private resources(): { cpus: number; memoryMiB: number; diskMiB: number } {
    const c = this.ctx.config.local;
    return { cpus: c.cpus, memoryMiB: toMiB(c.memory), diskMiB: toMiB(c.disk) };
  }

  async validate(placement: Placement): Promise<void> {
    if (placement.size || placement.location) {
      throw new UserError("the local provider has no sizes or locations", { hint: "set local.cpus, local.memory and local.disk in your config instead of --size/--location" });
    }
    const bin = qemuBinary();
    if (!hasCommand(bin)) {
      throw new UserError(`${bin} is not installed`, {
        hint: "Debian/Ubuntu: `sudo apt-get install qemu-system-x86 qemu-utils genisoimage` (or `bash scripts/install-deps.sh`); macOS: `brew install qemu xorriso`",
      });
    }
    if (!hasCommand("qemu-img")) throw new UserError("qemu-img is not installed", { hint: "run `bash scripts/install-deps.sh` as root" });
    if (!isoTool()) {
      throw new UserError(`no tool to write the cloud-init seed ISO (one of ${ISO_TOOLS.join(", ")})`, {
        hint: "Debian/Ubuntu: `sudo apt-get install genisoimage` (or `bash scripts/install-deps.sh`); macOS: `brew install xorriso`",
      });
    }
    this.validateNetwork();
    findImage(this.ctx.cacheDir, this.ctx.config.local.image);
    const r = this.resources();
    const problems: string[] = [];
    if (r.cpus > cpus().length) problems.push(`local.cpus: ${r.cpus} is more than this machine's ${cpus().length} CPUs`);
    const hostMiB = Math.floor(totalmem() / 2 ** 20);
    if (r.memoryMiB > hostMiB - 512) problems.push(`local.memory: ${r.memoryMiB} MiB leaves less than 512 MiB of this machine's ${hostMiB} MiB`);
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
    const fs = statfsSync(this.root);
    const freeMiB = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
    if (r.diskMiB > freeMiB) problems.push(`local.disk: ${r.diskMiB} MiB is more than the ${freeMiB} MiB free under ${this.root}`);
    if (problems.length) throw new UserError("the local VM does not fit on this machine", { notes: problems, hint: "lower these in your config (spuff config show)" });
  }

  /** local.network nat needs passt, never slirp's nat (which maps the guest's gateway to this machine's 127.0.0.1). */
  private validateNetwork(): void {
    const c = this.ctx.config.local;
    if (c.network !== "nat") return;
    if (c.guest_forwards?.length) {
      throw new UserError("local.guest_forwards needs local.network: none", {
        hint: "with nat the VM reaches nothing of this machine; set local.network: none to use guest_forwards, or remove them",
      });
    }
    if (!hasCommand("passt")) {
      throw new UserError("passt is not installed: local.network nat (the default) gives the VM its network through passt", {
        hint: "Debian/Ubuntu: `sudo apt-get install passt` (or `sudo bash scripts/install-deps.sh`); or set local.network: none for a VM without any network",
      });
    }
  }

  async create(spec: CreateSpec, progress: Progress): Promise<Vm> {
    // A baked image (docs/images.md) is a base image like any other: the overlay goes on its flattened disk.
    const image = spec.image ? this.bakes.baseOf(spec.image) : findImage(this.ctx.cacheDir, this.ctx.config.local.image);
    const dir = this.dir(spec.name);
    if (existsSync(join(dir, "meta.json"))) throw new UserError(`a local VM named ${spec.name} already exists`, { hint: `spuff down ${spec.name}` });
    if (spec.volume) this.checkAttachable(spec.volume, spec.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const r = this.resources();
    const meta: Meta = {
      name: spec.name,
      labels: spec.labels,
      createdAt: new Date().toISOString(),
      sshPort: await freePort(),
      cpus: r.cpus,
      memoryMiB: r.memoryMiB,
      image,
      // Recorded before QEMU opens it: from here on the workspace counts as attached to this VM.
      ...(spec.volume ? { workspace: spec.volume.id } : {}),
    };
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));

    progress.phase("seed");
    this.seed(dir, spec);
    const overlay = join(dir, "disk.qcow2");
    run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.disk, overlay, `${r.diskMiB}M`]);

    progress.phase("boot");
    const accel = await this.boot(meta, image, progress, spec.signal);
    meta.accel = accel;
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
    return this.toVm(meta);
  }

  /** NoCloud seed ISO (volume id cidata) with the user-data and meta-data. */
  private seed(dir: string, spec: CreateSpec): void {
    const seedDir = join(dir, "seed");
    mkdirSync(seedDir, { recursive: true });
    writeFileSync(join(seedDir, "user-data"), spec.userData, { mode: 0o600 });
    writeFileSync(join(seedDir, "meta-data"), `instance-id: spuff-${spec.name}-${spec.requestId}\nlocal-hostname: ${spec.name}\n`);
    run(isoTool() ?? "genisoimage", ["-quiet", "-o", join(dir, "seed.iso"), "-V", "cidata", "-J", "-R", join(seedDir, "user-data"), join(seedDir, "meta-data")]);
    rmSync(seedDir, { recursive: true, force: true });
  }

  private accelCache(): string {
    return join(this.ctx.cacheDir, "accel");
  }

  /** Starts QEMU detached; tries accelerators best first and remembers the first one whose guest survives. */
  private async boot(meta: Meta, image: BaseImage, progress: Progress, signal?: AbortSignal): Promise<Accel> {
    const dir = this.dir(meta.name);
    const setting = this.ctx.config.local.accel;
    const remembered = existsSync(this.accelCache()) ? (readFileSync(this.accelCache(), "utf8").trim() as Accel) : undefined;
    // The accelerator that worked last time first, then the others: a remembered one that stopped working falls back.
    const candidates = [...new Set([...(setting === "auto" && remembered ? [remembered] : []), ...accelCandidates(setting)])];
    let lastError = "";
    for (const accel of candidates) {
      signal?.throwIfAborted();
      const log = join(dir, "qemu.log");
      rmSync(join(dir, "qemu.pid"), { force: true });
      const fd = openSync(log, "w");
      const network = this.ctx.config.local.network;
      let passt: Passt | undefined;
      if (network === "nat") {
        try {
          passt = await startPasst(dir, meta.sshPort);
        } catch (e) {
          throw new ProviderError(`cannot start the network for ${meta.name}`, { notes: [(e as Error).message], hint: `see ${join(dir, "passt.log")}` });
        }
      }
      const child = spawn(
        qemuBinary(),
        qemuArgs({
          name: meta.name,
          accel,
          cpus: meta.cpus,
          memoryMiB: meta.memoryMiB,
          overlay: join(dir, "disk.qcow2"),
          seed: join(dir, "seed.iso"),
          kernel: image.kernel,
          initrd: image.initrd,
          sshPort: meta.sshPort,
          guestForwards: this.ctx.config.local.guest_forwards ?? [],
          pidfile: join(dir, "qemu.pid"),
          qmp: join(dir, "qmp.sock"),
          console: join(dir, "console.log"),
          network,
          ...(meta.workspace ? { workspace: { file: this.workspaceDisk(meta.workspace), serial: workspaceSerial(meta.workspace) } } : {}),
        }),
        { detached: true, stdio: ["ignore", fd, fd, ...(passt ? [passt.socket] : [])] },
      );
      child.unref();
      if (passt) {
        passt.socket.destroy(); // QEMU holds its own copy
        if (child.pid) tiePasstToQemu(child.pid, passt.pid);
      }
      const failure = await probe(child, accel, { log, console: join(dir, "console.log") }, accel === "tcg" ? 1500 : ACCEL_PROBE_MS);
      if (failure === undefined) {
        if (setting === "auto" && remembered !== accel) writeFileAtomic(this.accelCache(), `${accel}\n`, 0o644);
        progress.info(`QEMU runs with ${accel.toUpperCase()} acceleration${accel === "tcg" ? " (software emulation: slow, about a minute to SSH)" : ""}`);
        return accel;
      }
      lastError = failure || readFileSync(log, "utf8").trim().split("\n").slice(-3).join(" | ");
      if (accel !== "tcg") progress.warn(`the guest does not run under ${accel.toUpperCase()} (${lastError.slice(0, 160)}); retrying with TCG`);
    }
    throw new ProviderError(`QEMU could not start ${meta.name}`, {
      notes: [lastError],
      hint: `see ${join(dir, "qemu.log")}; try local.accel: tcg`,
    });
  }

  private readMeta(name: string): Meta | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dir(name), "meta.json"), "utf8")) as Meta;
    } catch {
      return undefined;
    }
  }

  private toVm(meta: Meta): Vm {
    const dir = this.dir(meta.name);
    const alive = livePid(join(dir, "qemu.pid")) !== undefined;
    return {
      id: meta.name,
      name: meta.name,
      provider: "local",
      // QEMU exits when the guest powers off (idle or TTL), and when the host restarts: the VM is stopped, its overlay
      // disk is kept (`spuff start` boots it again) until its TTL.
      status: alive ? "running" : "stopped",
      ...(alive ? {} : { stopReason: stopReason(join(dir, "console.log")) }),
      endpoint: { host: "127.0.0.1", port: meta.sshPort },
      location: "localhost",
      size: `${meta.cpus}cpu-${Math.round(meta.memoryMiB / 1024)}g${meta.accel ? `-${meta.accel}` : ""}`,
      labels: meta.labels,
      createdAt: meta.createdAt,
      pricePerHour: { amount: 0, currency: "EUR" },
    };
  }

  /**
   * Every VM directory with metadata. A directory whose meta.json exists but cannot be read is listed as status
   * "unknown" (spuff cannot tell what it is, so nothing treats it as gone or deletes it).
   */
  async list(): Promise<Vm[]> {
    if (!existsSync(this.root)) return [];
    const vms: Vm[] = [];
    for (const n of readdirSync(this.root)) {
      const meta = this.readMeta(n);
      if (meta) vms.push(this.toVm(meta));
      else if (existsSync(join(this.dir(n), "meta.json"))) vms.push({ id: n, name: n, provider: "local", status: "unknown", labels: {} });
    }
    return vms;
  }

  async get(name: string): Promise<Vm | undefined> {
    const m = this.readMeta(name);
    return m ? this.toVm(m) : undefined;
  }

  /** Boots a stopped VM again: the same overlay disk (so the same pinned host key and files), seed and SSH port. */
  async start(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<Vm> {
    const meta = this.readMeta(vm.name);
    const dir = this.dir(vm.name);
    if (!meta) throw new ProviderError(`the local VM ${vm.name} has no readable metadata`, { hint: `look at ${join(dir, "meta.json")}` });
    if (livePid(join(dir, "qemu.pid")) !== undefined) return this.toVm(meta);
    const bin = qemuBinary();
    if (!hasCommand(bin)) {
      throw new UserError(`${bin} is not installed: ${vm.name} cannot be started (its disk is kept)`, {
        hint: "Debian/Ubuntu: `sudo apt-get install qemu-system-x86 qemu-utils genisoimage`; macOS: `brew install qemu cdrtools`",
      });
    }
    const image = meta.image ?? findImage(this.ctx.cacheDir, this.ctx.config.local.image);
    for (const f of [image.disk, image.kernel, image.initrd, join(dir, "disk.qcow2"), join(dir, "seed.iso"), ...(meta.workspace ? [this.workspaceDisk(meta.workspace)] : [])]) {
      if (f && !existsSync(f)) throw new ProviderError(`${vm.name} cannot boot: ${f} is missing`, { hint: `its disk is ${join(dir, "disk.qcow2")}; \`spuff down ${vm.name}\` removes it` });
    }
    if (!(await portFree(meta.sshPort))) {
      const old = meta.sshPort;
      meta.sshPort = await freePort();
      progress.info(`port ${old} is in use now; SSH is forwarded from port ${meta.sshPort}`);
    }
    progress.phase("boot");
    meta.accel = await this.boot(meta, image, progress, signal);
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
    return this.toVm(meta);
  }

  async waitReady(vm: Vm): Promise<Vm> {
    const fresh = await this.get(vm.name);
    if (!fresh || fresh.status !== "running") {
      const log = join(this.dir(vm.name), "console.log");
      const tail = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").slice(-5) : [];
      throw new ProviderError(`the local VM ${vm.name} stopped while booting`, { notes: tail, hint: `see ${log}` });
    }
    return fresh;
  }

  sshEndpoint(vm: Vm): SshEndpoint {
    if (!vm.endpoint) throw new ProviderError(`${vm.name} has no SSH port`);
    return vm.endpoint;
  }

  /**
   * Stops QEMU (QMP quit, then SIGKILL by pid) and removes the overlay, seed and metadata. A workspace volume lives
   * elsewhere (local-workspaces/) and is kept: with the metadata gone it is detached.
   */
  async destroy(vm: Vm): Promise<void> {
    const dir = this.dir(vm.name);
    const pidfile = join(dir, "qemu.pid");
    const pid = livePid(pidfile);
    if (pid !== undefined) {
      await qmp(join(dir, "qmp.sock"), ["quit"]);
      const deadline = Date.now() + 5000;
      while (livePid(pidfile) !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (livePid(pidfile) !== undefined) process.kill(pid, "SIGKILL");
      while (livePid(pidfile) !== undefined) await new Promise((r) => setTimeout(r, 50));
    }
    await stopPasst(dir);
    rmSync(dir, { recursive: true, force: true });
  }

  // ---- baked images (providers/local/bakes.ts) ----

  /** The base image's disk and when it was written: a rebuilt or re-pulled base makes bakes stale. */
  async imageBase(): Promise<string> {
    const disk = findImage(this.ctx.cacheDir, this.ctx.config.local.image).disk;
    return `${disk}:${Math.floor(statSync(disk).mtimeMs)}`;
  }

  async listImages(): Promise<Image[]> {
    return this.bakes.list();
  }

  async createImage(vm: Vm, spec: ImageSpec, progress: Progress): Promise<Image> {
    const meta = this.readMeta(vm.name);
    if (!meta?.image) throw new ProviderError(`the bake VM ${vm.name} has no metadata`);
    return this.bakes.create(this.dir(vm.name), meta.image, spec, progress);
  }

  /** Deletes a bake's directory; refused while a local VM's overlay still sits on its disk. */
  async deleteImage(image: Image, progress: Progress): Promise<void> {
    const users = (existsSync(this.root) ? readdirSync(this.root) : [])
      .map((n) => this.readMeta(n))
      .filter((m) => m?.image?.disk?.includes(`/bakes/${image.id}/`));
    if (users.length) {
      throw new ProviderError(`the baked image ${image.id} is the base of ${users.map((m) => m?.name).join(", ")}`, {
        hint: `remove ${users.length === 1 ? "that VM" : "those VMs"} first (\`spuff down NAME\`)`,
      });
    }
    this.bakes.delete(image);
    progress.info(`deleted baked image ${image.name} (${image.id})`);
  }

  async setImageLabels(image: Image, labels: Record<string, string>): Promise<void> {
    this.bakes.setLabels(image, labels);
  }

  // ---- workspace volumes ----

  private workspaceDir(id: string): string {
    if (!WORKSPACE_ID_RE.test(id)) throw new ProviderError(`"${id}" is not a local workspace id`);
    return join(this.workspaces, id);
  }

  private workspaceDisk(id: string): string {
    return join(this.workspaceDir(id), "disk.qcow2");
  }

  private readWorkspaceMeta(dir: string): WorkspaceMeta | undefined {
    try {
      return JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as WorkspaceMeta;
    } catch {
      return undefined;
    }
  }

  /** Workspace id → the local VM (running or stopped) whose metadata has it attached. */
  private attachments(): Map<string, string> {
    const map = new Map<string, string>();
    if (!existsSync(this.root)) return map;
    for (const n of readdirSync(this.root)) {
      const ws = this.readMeta(n)?.workspace;
      if (ws) map.set(ws, n);
    }
    return map;
  }

  private toVolume(meta: WorkspaceMeta, attachedTo: string | undefined): Volume {
    return {
      id: meta.id,
      name: meta.name,
      provider: "local",
      sizeGiB: meta.sizeGiB,
      location: "localhost",
      labels: meta.labels,
      ...(attachedTo ? { attachedTo } : {}),
      createdAt: meta.createdAt,
      // A disk on this machine: free, like the local VMs.
      pricePerMonth: { amount: 0, currency: "EUR" },
    };
  }

  /** Every workspace volume (labelled managed-by=spuff, spuff/kind=workspace), with the VM it is attached to. */
  async listVolumes(): Promise<Volume[]> {
    if (!existsSync(this.workspaces)) return [];
    const attached = this.attachments();
    const volumes: Volume[] = [];
    for (const id of readdirSync(this.workspaces)) {
      if (!WORKSPACE_ID_RE.test(id)) continue;
      const meta = this.readWorkspaceMeta(join(this.workspaces, id));
      if (!meta || meta.id !== id || meta.labels?.[LABEL.managedBy] !== MANAGED_BY_VALUE || meta.labels[LABEL.kind] !== "workspace") continue;
      volumes.push(this.toVolume(meta, attached.get(id)));
    }
    return volumes;
  }

  /** An empty qcow2 of spec.sizeGiB (sparse: it takes space as it fills) with its labels. */
  async createVolume(spec: VolumeSpec): Promise<Volume> {
    spec.signal?.throwIfAborted();
    if (!(Number.isInteger(spec.sizeGiB) && spec.sizeGiB > 0)) throw new UserError(`a workspace size must be a whole number of GiB, got ${spec.sizeGiB}`, { hint: "set workspace.size, e.g. 10G" });
    if (spec.location && spec.location !== "localhost") throw new UserError("the local provider has no locations", { hint: "leave out --location" });
    const id = randomBytes(5).toString("hex");
    const tmp = join(this.workspaces, `.tmp-${id}`);
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    const meta: WorkspaceMeta = { id, name: spec.name, sizeGiB: spec.sizeGiB, labels: spec.labels, createdAt: new Date().toISOString() };
    try {
      writeFileAtomic(join(tmp, "meta.json"), JSON.stringify(meta, null, 2));
      run("qemu-img", ["create", "-q", "-f", "qcow2", join(tmp, "disk.qcow2"), `${spec.sizeGiB}G`]);
      renameSync(tmp, this.workspaceDir(id));
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
    return this.toVolume(meta, undefined);
  }

  /** Deletes a detached workspace (its disk and labels). Already gone = success; attached to a VM = ProviderError. */
  async deleteVolume(volume: Volume): Promise<void> {
    const dir = this.workspaceDir(volume.id);
    if (!existsSync(dir)) return;
    const vm = this.attachments().get(volume.id);
    if (vm) {
      throw new ProviderError(`the workspace of ${volume.name} is attached to the local VM ${vm}; nothing was deleted`, { hint: `\`spuff down ${vm}\` first` });
    }
    const doomed = join(this.workspaces, `.del-${volume.id}`);
    renameSync(dir, doomed);
    rmSync(doomed, { recursive: true, force: true });
  }

  async setVolumeLabels(volume: Volume, labels: Record<string, string>): Promise<void> {
    const dir = this.workspaceDir(volume.id);
    const meta = this.readWorkspaceMeta(dir);
    if (!meta) throw new ProviderError(`there is no local workspace ${volume.id} (${volume.name})`, { hint: `look at ${dir}` });
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify({ ...meta, labels }, null, 2));
  }

  /** The guest sees the workspace as a virtio disk with the serial spuff-ws-<id>. */
  volumeDevices(volume: Volume): string[] {
    this.workspaceDir(volume.id);
    return [`/dev/disk/by-id/virtio-${workspaceSerial(volume.id)}`];
  }

  /** Before `create` with a workspace: its disk is there and no other local VM (running or stopped) has it. */
  private checkAttachable(volume: Volume, vmName: string): void {
    const disk = this.workspaceDisk(volume.id);
    if (!existsSync(disk)) throw new ProviderError(`the workspace of ${volume.name} has no disk (${disk} is missing)`);
    const other = this.attachments().get(volume.id);
    if (other && other !== vmName) {
      throw new UserError(`the workspace of ${volume.name} is attached to the local VM ${other}`, { hint: `\`spuff down ${other}\` first, or \`spuff ssh ${other}\`` });
    }
  }

  /** Runs the image recipe (providers/local/build-image.sh) into the cache, keyed by the recipe's hash. */
  async buildImage(opts: { force: boolean; mirror?: string }, progress: Progress): Promise<string> {
    const release = configuredRelease(this.ctx.config.local.image);
    const out = builtImageDir(this.ctx.cacheDir, release);
    if (existsSync(join(out, "disk.qcow2")) && !opts.force) {
      progress.info(`image already built: ${out} (--force rebuilds it)`);
      return out;
    }
    if (opts.force) rmSync(out, { recursive: true, force: true });
    mkdirSync(join(out, ".."), { recursive: true });
    progress.phase(`debootstrap ${RELEASES[release].title} (about 3 minutes)`);
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn("bash", [recipePath(), release, out, ...(opts.mirror ? [opts.mirror] : [])], { stdio: ["ignore", "inherit", "pipe"] });
      child.stderr.on("data", (d: Buffer) => {
        for (const line of d.toString().trim().split("\n")) if (line) progress.info(line.replace(/^build-image: /, ""));
      });
      child.on("exit", resolve);
    });
    if (code === 3) throw new UserError("cannot build the image here", { hint: "run it as root with debootstrap, e2fsprogs and qemu-utils installed (`sudo bash scripts/install-deps.sh`)" });
    if (code !== 0) throw new ProviderError(`the image build failed (exit ${code})`, { hint: "check that the Debian mirror is reachable; pass --mirror URL to use another" });
    giveToInvoker(out, this.ctx.env);
    return out;
  }

  /** Debian's official genericcloud image, verified against Debian's SHA512SUMS (`spuff image pull`). */
  async pullImage(opts: { force: boolean; url?: string }, progress: Progress): Promise<string> {
    const { pullImage } = await import("./pull.js");
    const dir = await pullImage({ cacheDir: this.ctx.cacheDir, release: configuredRelease(this.ctx.config.local.image), baseUrl: opts.url, force: opts.force, progress });
    giveToInvoker(dir, this.ctx.env);
    return dir;
  }

  /** Rewrites the labels in the VM's metadata (`spuff extend`). */
  async setLabels(vm: Vm, labels: Record<string, string>): Promise<void> {
    const meta = this.readMeta(vm.name);
    if (!meta) throw new UserError(`there is no local VM named ${vm.name}`);
    writeFileAtomic(join(this.dir(vm.name), "meta.json"), JSON.stringify({ ...meta, labels }, null, 2));
  }

  /**
   * Removes VM directories without metadata (what a crash between creating the directory and writing it leaves) and
   * the leftovers of a workspace create or delete that a crash cut short (".tmp-<id>", ".del-<id>"). Never a workspace.
   */
  async reapOrphans(dryRun: boolean, _progress?: Progress, busy?: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    if (existsSync(this.workspaces)) {
      for (const entry of readdirSync(this.workspaces)) {
        const m = /^\.(tmp|del)-([0-9a-f]{10})$/.exec(entry);
        if (!m) continue;
        const dir = join(this.workspaces, entry);
        const meta = this.readWorkspaceMeta(dir);
        if (m[1] === "tmp" && (Date.now() - statSync(dir).mtimeMs < 60_000 || (meta && busy?.has(meta.name)))) continue;
        removed.push(`${m[1] === "tmp" ? "unfinished" : "half-deleted"} workspace disk ${dir}`);
        if (!dryRun) rmSync(dir, { recursive: true, force: true });
      }
    }
    if (!existsSync(this.root)) return removed;
    for (const name of readdirSync(this.root)) {
      const dir = this.dir(name);
      // A meta.json that cannot be read is not "no metadata": spuff cannot tell what the VM is, so it stays.
      if (existsSync(join(dir, "meta.json")) || livePid(join(dir, "qemu.pid")) !== undefined) continue;
      // A directory younger than a minute may belong to an `up` that is writing it right now.
      if (Date.now() - statSync(dir).mtimeMs < 60_000) continue;
      removed.push(`VM directory without metadata ${dir}`);
      if (!dryRun) rmSync(dir, { recursive: true, force: true });
    }
    return removed;
  }
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new ProviderError(`${cmd} failed: ${(r.stderr || r.error?.message || "").trim()}`);
}

export const createProvider: ProviderFactory = (ctx) => new LocalProvider(ctx);
