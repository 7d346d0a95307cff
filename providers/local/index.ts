import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { basename, join } from "node:path";
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
import { pidAlive, writeFileAtomic } from "../../src/core/state.js";
import { execOnVm, waitForSsh } from "../../src/ssh/connect.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { type BaseImage, builtImageDir, configuredRelease, findImage, giveToInvoker, RELEASES, recipePath } from "./image.js";
import { platform } from "node:os";
import { LocalBakes } from "./bakes.js";
import { channelExchange, WARM_CLOUD_INIT_CHECK, type Identity, identityLine, identityOf, incomingArgs, parseIdentityAnswer, parseUserData, pruneStates, Qmp, resumeRestored, saveState, shapeHash, splitWorkspace, WARM_HOSTNAME, WARM_IDENTITY, warmDeviceArgs, warmKey, warmRoot, warmSeedUserData, warmUpUserData } from "./warm.js";
import { type Accel, accelCandidates, freePort, hasCommand, kvmUnavailable, livePid, type Passt, portFree, qemuArgs, qemuBinary, qmp, startPasst, stopPasst, tiePasstToQemu, toMiB } from "./qemu.js";

/** How `boot` starts QEMU for a saved state: its own directory and accelerator, extra devices, no accelerator probe. */
interface BootOptions {
  dir?: string;
  accel?: Accel;
  extraArgs?: string[];
  /** Milliseconds to watch the new QEMU (default: the accelerator probe); 0: not at all. */
  probeMs?: number;
  /** Leave the workspace disk out of the QEMU arguments (a restore: it is plugged in afterwards). */
  noWorkspace?: boolean;
}

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
  /** Warm start: the saved state directory whose disk the overlay is layered on (it is kept while the VM exists). */
  warmState?: string;
  /** Warm start with a workspace volume: the user-data's mount step, run on the restored VM (warm.ts splitWorkspace). */
  warmMount?: string[];
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

interface WarmState {
  dir: string;
  accel: Accel;
  identity: Identity;
  /** The user-data's workspace mount step, when the VM has a workspace volume (run after the restore). */
  mount?: string[];
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
    const overlay = join(dir, "disk.qcow2");
    const warm = await this.warmState(spec, image, progress);
    if (warm) {
      // A restored VM makes its own host key: its seed (for a later cold boot) holds no host key pair.
      this.seed(dir, spec, warmSeedUserData(spec.userData));
      const vm = await this.restore(meta, spec, warm, progress);
      if (vm) return vm;
    }
    this.seed(dir, spec);
    run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.disk, overlay, `${r.diskMiB}M`]);

    progress.phase("boot");
    const accel = await this.boot(meta, image, progress, spec.signal);
    meta.accel = accel;
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
    return this.toVm(meta);
  }

  /** The accelerator a saved state is made and restored with: the configured one, else the one that worked last. */
  private warmAccel(): Accel | undefined {
    const setting = this.ctx.config.local.accel;
    if (setting !== "auto") return setting;
    const remembered = existsSync(this.accelCache()) ? (readFileSync(this.accelCache(), "utf8").trim() as Accel) : undefined;
    const candidates = accelCandidates("auto");
    if (remembered && candidates.includes(remembered)) return remembered;
    return candidates.length === 1 ? candidates[0] : undefined;
  }

  /**
   * Warm start (docs/adr/0009-local-warm-start.md): the saved state this VM can be restored from, made now (one cold
   * boot of a warm-up VM) if there is none for its image, QEMU, machine arguments and user-data shape. Undefined: boot
   * cold (local.warm false or --cold, a workspace volume, no known accelerator yet, another `up` saving the state).
   */
  private async warmState(spec: Pick<CreateSpec, "userData" | "volume" | "signal">, image: BaseImage, progress: Progress): Promise<WarmState | undefined> {
    const c = this.ctx.config.local;
    if (c.warm === false) return undefined;
    const accel = this.warmAccel();
    if (!accel) return undefined;
    // A workspace volume's mount step is not in the state: it runs on the restored VM (splitWorkspace).
    const { doc, mount } = splitWorkspace(parseUserData(spec.userData));
    if (spec.volume && !mount) return undefined;
    const identity = identityOf(doc);
    if (!identity) return undefined;
    const r = this.resources();
    const machine = { accel, cpus: r.cpus, memoryMiB: r.memoryMiB, kernel: image.kernel, initrd: image.initrd, guestForwards: c.guest_forwards ?? [], network: c.network };
    const { key, inputs } = warmKey({ image, machine, diskMiB: r.diskMiB, shape: shapeHash(doc) });
    const root = warmRoot(this.ctx.cacheDir, image);
    const dir = join(root, key);
    const state: WarmState = { dir, accel, identity, ...(mount ? { mount } : {}) };
    if (!existsSync(join(dir, "bad")) && recordedInputs(dir) === JSON.stringify(inputs)) return state;
    const lock = `${dir}.lock`;
    mkdirSync(root, { recursive: true });
    try {
      writeFileSync(lock, `${process.pid}\n`, { flag: "wx" });
    } catch {
      const holder = Number(readFileSync(lock, "utf8").trim());
      if (Number.isInteger(holder) && holder > 0 && pidAlive(holder)) {
        progress.info(`another spuff (pid ${holder}) is saving the machine state for warm starts; booting cold`);
        return undefined;
      }
      writeFileSync(lock, `${process.pid}\n`);
    }
    try {
      progress.phase("save machine state (once: a cold boot, then every VM like this one starts warm)");
      await this.buildWarm(doc, { dir, accel, inputs, image, machine: { cpus: r.cpus, memoryMiB: r.memoryMiB, diskMiB: r.diskMiB } }, progress, spec.signal);
      const inUse = new Set((existsSync(this.root) ? readdirSync(this.root) : []).map((n) => this.readMeta(n)?.warmState));
      for (const old of pruneStates(root, inputs, (d) => inUse.has(d))) progress.info(`removed the saved state ${old} (made from another image or QEMU, or bad; no VM uses it)`);
    } finally {
      rmSync(lock, { force: true });
    }
    return state;
  }

  /**
   * `image build`/`pull --warm`: saves the state warm starts restore, for user-data rendered from the
   * current config with a placeholder identity (the shape `up` renders). A failure is a warning: `up` tries again.
   */
  private async prepareWarm(progress: Progress, signal?: AbortSignal): Promise<void> {
    if (this.ctx.config.local.warm === false) {
      progress.info("local.warm is false: no machine state is saved");
      return;
    }
    const { renderUserData, templateArgsFromConfig } = await import("../../src/cloudinit/index.js");
    const login = ed25519KeyPair(WARM_HOSTNAME);
    // With a workspace volume (the default) `up` renders its mount step, which the state leaves out (splitWorkspace):
    // rendered here with a placeholder device, so that the state saved now has the shape `up`'s user-data has.
    const workspaceDevices = this.ctx.config.workspace.volume ? this.volumeDevices({ id: "0000000000" } as Volume) : undefined;
    const parts = { hostname: WARM_HOSTNAME, hostKey: ed25519KeyPair(`${WARM_HOSTNAME}-host`), clientPublicKey: login.public, expiresAt: new Date(Date.now() + 3600_000), workspaceDevices };
    try {
      const userData = renderUserData(templateArgsFromConfig(this.ctx.config, parts));
      const image = findImage(this.ctx.cacheDir, this.ctx.config.local.image);
      if (!(await this.warmState({ userData, signal }, image, progress))) progress.info("no machine state saved now: the first `spuff up` saves it");
    } catch (err) {
      if (signal?.aborted) throw err;
      progress.warn(`saving the machine state for warm starts failed: ${(err as Error).message}; the first \`spuff up\` tries again`);
    }
  }

  /**
   * The warm-up VM: boots the image with the VM's own user-data but a throwaway identity, waits for cloud-init, has
   * the guest seal itself (sshd stopped, every per-VM file removed, waiting on the identity channel) and saves its
   * machine state next to its disk. Nothing of it is any VM's identity.
   */
  private async buildWarm(
    doc: ReturnType<typeof parseUserData>,
    w: { dir: string; accel: Accel; inputs: Record<string, unknown>; image: BaseImage; machine: { cpus: number; memoryMiB: number; diskMiB: number } },
    progress: Progress,
    signal?: AbortSignal,
  ): Promise<void> {
    const build = `${w.dir}.build-${process.pid}`;
    rmSync(build, { recursive: true, force: true });
    mkdirSync(build, { recursive: true, mode: 0o700 });
    const hostKey = ed25519KeyPair("spuff-warm-host");
    const login = ed25519KeyPair("spuff-warm");
    const idle = identityOf(doc)?.idleConf ?? "";
    const idleConf = idle.replace(/^EXPIRES_AT=.*$/m, `EXPIRES_AT=${Math.floor(Date.now() / 1000) + 6 * 3600}`);
    writeSeed(build, warmUpUserData(doc, { hostname: WARM_HOSTNAME, authorizedKeys: [login.public], idleConf }, hostKey), `instance-id: spuff-warm-${basename(w.dir)}\nlocal-hostname: ${WARM_HOSTNAME}\n`);
    run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", w.image.disk, join(build, "disk.qcow2"), `${w.machine.diskMiB}M`]);
    const meta: Meta = { name: WARM_HOSTNAME, labels: {}, createdAt: new Date().toISOString(), sshPort: await freePort(), cpus: w.machine.cpus, memoryMiB: w.machine.memoryMiB };
    const channel = join(build, "chan.sock");
    const pidfile = join(build, "qemu.pid");
    try {
      await this.boot(meta, w.image, progress, signal, { dir: build, accel: w.accel, extraArgs: warmDeviceArgs(channel) });
      const target = { name: "the warm-up VM", host: "127.0.0.1", port: meta.sshPort, user: identityOf(doc)?.user ?? "", privateKey: login.private, hostKey: hostKey.public };
      await waitForSsh(target, { timeoutMs: 15 * 60_000, signal });
      const ci = await execOnVm(target, "cloud-init status --wait --long", signal);
      if (ci.code !== 0) throw new ProviderError("cloud-init on the warm-up VM finished with errors", { notes: ci.stdout.trim().split("\n"), hint: "`spuff up --cold` boots without a saved state" });
      const sealed = channelExchange(channel, undefined, 120_000, signal);
      const seal = await execOnVm(target, `sudo -n ${WARM_IDENTITY} seal`, signal);
      if (seal.code !== 0) throw new ProviderError(`sealing the warm-up VM failed (exit ${seal.code})`, { notes: seal.stderr.trim().split("\n") });
      const answer = await sealed;
      if (answer !== "sealed") throw new ProviderError(`sealing the warm-up VM failed: it answered ${JSON.stringify(answer.replace(/[^\x20-\x7e]/g, "?").slice(0, 200))}`);
      progress.info("saving the machine state");
      const q = await Qmp.open(join(build, "qmp.sock"));
      try {
        await saveState(q, join(build, "state.bin"));
        await q.run("quit").catch(() => undefined);
      } finally {
        q.close();
      }
      await this.stopQemu(build);
      await stopPasst(build);
      for (const f of ["seed.iso", "qmp.sock", "chan.sock", "qemu.pid", "passt.pid", "passt.dir"]) rmSync(join(build, f), { force: true });
      writeFileAtomic(join(build, "warm.json"), JSON.stringify({ createdAt: new Date().toISOString(), inputs: w.inputs }, null, 2), 0o644);
      rmSync(w.dir, { recursive: true, force: true });
      renameSync(build, w.dir);
      giveToInvoker(w.dir, this.ctx.env);
    } catch (err) {
      if (livePid(pidfile) !== undefined) await this.stopQemu(build);
      await stopPasst(build);
      rmSync(build, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Restores the saved state into this VM: its own overlay on the state's disk, the same machine arguments, then its
   * identity over the channel. Undefined when QEMU cannot restore the state (marked bad, so it is made again next
   * time): the caller boots cold. The guest refusing its identity is an error.
   */
  private async restore(meta: Meta, spec: CreateSpec, warm: WarmState, progress: Progress): Promise<Vm | undefined> {
    const dir = this.dir(meta.name);
    const r = this.resources();
    progress.phase("restore");
    run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", join(warm.dir, "disk.qcow2"), join(dir, "disk.qcow2"), `${r.diskMiB}M`]);
    meta.warmState = warm.dir;
    meta.accel = warm.accel;
    writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
    const channel = join(dir, "chan.sock");
    try {
      await this.boot(meta, meta.image as BaseImage, progress, spec.signal, {
        accel: warm.accel,
        extraArgs: [...warmDeviceArgs(channel), ...incomingArgs(join(warm.dir, "state.bin"))],
        probeMs: 0,
        noWorkspace: true,
      });
      const q = await Qmp.open(join(dir, "qmp.sock"));
      try {
        await resumeRestored(q, 120_000);
        // The workspace disk, plugged in where a cold boot has it (the saved state has none); mounted in `cloudInitCheck`.
        if (meta.workspace) {
          await q.run("blockdev-add", { driver: "qcow2", "node-name": "workspace-disk", file: { driver: "file", filename: this.workspaceDisk(meta.workspace) } });
          await q.run("device_add", { driver: "virtio-blk-pci", id: "workspace", drive: "workspace-disk", serial: workspaceSerial(meta.workspace), bus: "pci.0", addr: "0x10" });
          meta.warmMount = warm.mount;
          writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
        }
      } finally {
        q.close();
      }
    } catch (err) {
      if (spec.signal?.aborted) throw err; // `up` rolls this VM back; the state is not to blame
      progress.warn(`restoring the saved state failed (${(err as Error).message.slice(0, 200)}); it is made again next time, booting cold now`);
      writeFileSync(join(warm.dir, "bad"), `${(err as Error).message}\n`);
      await this.stopQemu(dir);
      await stopPasst(dir);
      delete meta.warmState;
      rmSync(join(dir, "disk.qcow2"), { force: true });
      writeFileAtomic(join(dir, "meta.json"), JSON.stringify(meta, null, 2));
      return undefined;
    }
    progress.phase("identity");
    const line = identityLine(warm.identity, { machineId: randomBytes(16).toString("hex"), instanceId: instanceId(spec) });
    // The guest's answer: the host key it made after its RNG was reseeded, before sshd started; core pins it.
    const ownHostKey = parseIdentityAnswer(await channelExchange(channel, line, 60_000, spec.signal), meta.name);
    return { ...this.toVm(meta), ownHostKey };
  }

  /** Ends the QEMU whose pidfile is in `dir` (QMP quit, then SIGKILL) and waits until it is gone. */
  private async stopQemu(dir: string): Promise<void> {
    const pidfile = join(dir, "qemu.pid");
    const pid = livePid(pidfile);
    if (pid === undefined) return;
    await qmp(join(dir, "qmp.sock"), ["quit"]);
    const deadline = Date.now() + 5000;
    while (livePid(pidfile) !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (livePid(pidfile) !== undefined) process.kill(pid, "SIGKILL");
    while (livePid(pidfile) !== undefined) await new Promise((r) => setTimeout(r, 50));
  }

  /** NoCloud seed ISO (volume id cidata) with the user-data (the VM's own unless given) and meta-data. */
  private seed(dir: string, spec: CreateSpec, userData: string | Buffer = spec.userData): void {
    writeSeed(dir, userData, `instance-id: ${instanceId(spec)}\nlocal-hostname: ${spec.name}\n`);
  }

  private accelCache(): string {
    return join(this.ctx.cacheDir, "accel");
  }

  /** Starts QEMU detached; tries accelerators best first and remembers the first one whose guest survives. */
  private async boot(meta: Meta, image: BaseImage, progress: Progress, signal?: AbortSignal, opts: BootOptions = {}): Promise<Accel> {
    const dir = opts.dir ?? this.dir(meta.name);
    const setting = this.ctx.config.local.accel;
    const remembered = existsSync(this.accelCache()) ? (readFileSync(this.accelCache(), "utf8").trim() as Accel) : undefined;
    // The accelerator that worked last time first, then the others: a remembered one that stopped working falls back.
    const candidates = opts.accel ? [opts.accel] : [...new Set([...(setting === "auto" && remembered ? [remembered] : []), ...accelCandidates(setting)])];
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
          ...(meta.workspace && !opts.noWorkspace ? { workspace: { file: this.workspaceDisk(meta.workspace), serial: workspaceSerial(meta.workspace) } } : {}),
        }).concat(opts.extraArgs ?? []),
        { detached: true, stdio: ["ignore", fd, fd, ...(passt ? [passt.socket] : [])] },
      );
      child.unref();
      if (passt) {
        passt.socket.destroy(); // QEMU holds its own copy
        if (child.pid) tiePasstToQemu(child.pid, passt.pid);
      }
      const probeMs = opts.probeMs ?? (accel === "tcg" ? 1500 : ACCEL_PROBE_MS);
      const failure = probeMs === 0 ? undefined : await probe(child, accel, { log, console: join(dir, "console.log") }, probeMs);
      if (failure === undefined) {
        if (setting === "auto" && remembered !== accel && !opts.accel) writeFileAtomic(this.accelCache(), `${accel}\n`, 0o644);
        if (probeMs !== 0) progress.info(`QEMU runs with ${accel.toUpperCase()} acceleration${accel === "tcg" ? " (software emulation: slow, about a minute to SSH)" : ""}`);
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

  /**
   * A VM restored from a saved state ran cloud-init in the warm-up VM, before the state was saved, and got its identity
   * over the channel since: cloud-init's result file (written when it finished) must list no errors. Read without
   * starting cloud-init's Python, which takes 10-20 s under TCG.
   */
  cloudInitCheck(vm: Vm): string | undefined {
    const meta = this.readMeta(vm.name);
    if (!meta?.warmState) return undefined;
    // Restored with a workspace volume: its mount step (from spuff's own user-data) runs now, as runcmd would have.
    const quote = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;
    const mount = meta.warmMount?.length ? `sudo ${meta.warmMount.map(quote).join(" ")} >&2 && ` : "";
    return `${mount}${WARM_CLOUD_INIT_CHECK}`;
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
  async buildImage(opts: { force: boolean; mirror?: string; warm?: boolean }, progress: Progress): Promise<string> {
    const release = configuredRelease(this.ctx.config.local.image);
    const out = builtImageDir(this.ctx.cacheDir, release);
    if (existsSync(join(out, "disk.qcow2")) && !opts.force) {
      progress.info(`image already built: ${out} (--force rebuilds it)`);
      if (opts.warm) await this.prepareWarm(progress);
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
    if (opts.warm) await this.prepareWarm(progress);
    return out;
  }

  /** Debian's official genericcloud image, verified against Debian's SHA512SUMS (`spuff image pull`). */
  async pullImage(opts: { force: boolean; url?: string; warm?: boolean }, progress: Progress): Promise<string> {
    const { pullImage } = await import("./pull.js");
    const dir = await pullImage({ cacheDir: this.ctx.cacheDir, release: configuredRelease(this.ctx.config.local.image), baseUrl: opts.url, force: opts.force, progress });
    giveToInvoker(dir, this.ctx.env);
    if (opts.warm) await this.prepareWarm(progress);
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

/** Writes dir/seed.iso, the NoCloud seed (volume id cidata) with `userData` and `metaData`. */
function writeSeed(dir: string, userData: string | Buffer, metaData: string): void {
  const seedDir = join(dir, "seed");
  mkdirSync(seedDir, { recursive: true });
  writeFileSync(join(seedDir, "user-data"), userData, { mode: 0o600 });
  writeFileSync(join(seedDir, "meta-data"), metaData);
  run(isoTool() ?? "genisoimage", ["-quiet", "-o", join(dir, "seed.iso"), "-V", "cidata", "-J", "-R", join(seedDir, "user-data"), join(seedDir, "meta-data")]);
  rmSync(seedDir, { recursive: true, force: true });
}

/** The inputs a saved state recorded (warm.json), as JSON; "" when it has none that can be read. */
function recordedInputs(dir: string): string {
  try {
    return JSON.stringify((JSON.parse(readFileSync(join(dir, "warm.json"), "utf8")) as { inputs: unknown }).inputs) ?? "";
  } catch {
    return "";
  }
}

/** cloud-init's instance id of the VM (its seed's meta-data). */
const instanceId = (spec: CreateSpec) => `spuff-${spec.name}-${spec.requestId}`;

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new ProviderError(`${cmd} failed: ${(r.stderr || r.error?.message || "").trim()}`);
}

export const createProvider: ProviderFactory = (ctx) => new LocalProvider(ctx);
