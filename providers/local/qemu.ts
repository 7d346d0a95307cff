import { spawn, spawnSync } from "node:child_process";
import { accessSync, chownSync, closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { arch, platform, tmpdir } from "node:os";
import { join } from "node:path";
import { pidAlive } from "../../src/core/state.js";

export type Accel = "kvm" | "hvf" | "tcg";

export function qemuBinary(): string {
  return arch() === "arm64" ? "qemu-system-aarch64" : "qemu-system-x86_64";
}

/**
 * Why KVM cannot be used on this Linux machine (undefined: it can). Without it every guest runs under TCG, software
 * emulation, and `spuff up` says so with the fix.
 */
export function kvmUnavailable(device = "/dev/kvm"): string | undefined {
  if (!existsSync(device)) {
    return `${device} does not exist (virtualisation is off in the firmware, or this machine is a VM without nested virtualisation)`;
  }
  try {
    accessSync(device, constants.R_OK | constants.W_OK);
    return undefined;
  } catch {
    return `no read/write access to ${device}: add yourself to its group (\`sudo usermod -aG kvm $USER\`, then log in again)`;
  }
}

/** Accelerators to try, best first, for config `local.accel`. */
export function accelCandidates(setting: "auto" | Accel): Accel[] {
  if (setting !== "auto") return [setting];
  if (platform() === "darwin") return ["hvf", "tcg"];
  return kvmUnavailable() === undefined ? ["kvm", "tcg"] : ["tcg"];
}

export function accelArgs(accel: Accel): string[] {
  if (accel === "tcg") return ["-accel", "tcg,thread=multi", "-cpu", "max"];
  return ["-accel", accel, "-cpu", "host"];
}

export interface QemuSpec {
  name: string;
  accel: Accel;
  cpus: number;
  memoryMiB: number;
  overlay: string;
  seed: string;
  kernel?: string;
  initrd?: string;
  sshPort: number;
  /** "10.0.2.100:22=127.0.0.1:2222" */
  guestForwards: string[];
  pidfile: string;
  qmp: string;
  console: string;
  /**
   * "none": user networking with restrict=on (no network for the guest), SSH forwarded on loopback only. "nat": the
   * NIC is the connected passt socket QEMU inherits as fd 3 (see passtArgs), which also forwards SSH.
   */
  network: "nat" | "none";
  /**
   * The workspace volume (a qcow2 that outlives the VM): a second virtio disk with this serial, which the guest finds as
   * /dev/disk/by-id/virtio-SERIAL (at most 20 characters). In a PCI slot above the automatic ones, so the VM's own
   * disk stays /dev/vda.
   */
  workspace?: { file: string; serial: string };
}

/** The fd the passt socket is handed to QEMU on (its stdio index in spawn). */
export const PASST_FD = 3;

/**
 * passt for `local.network: nat`: the guest reaches what this machine reaches, but `--no-map-gw` keeps the guest's
 * gateway from being mapped to this machine's own loopback (slirp's nat would hand the untrusted VM 127.0.0.1). SSH is
 * forwarded from 127.0.0.1:sshPort only; nothing else listens on this machine; no UDP forwarding.
 */
export function passtArgs(p: { socket: string; sshPort: number }): string[] {
  return ["--no-map-gw", "--foreground", "--quiet", "--socket", p.socket, "--tcp-ports", `127.0.0.1/${p.sshPort}:22`, "--udp-ports", "none"];
}

/** QEMU arguments, see QemuSpec.network. */
export function qemuArgs(s: QemuSpec): string[] {
  if (s.network === "nat" && s.guestForwards.length) throw new Error("guest_forwards need local.network: none");
  const nic = [
    "user",
    "model=virtio-net-pci",
    "restrict=on",
    `hostfwd=tcp:127.0.0.1:${s.sshPort}-:22`,
    // `cmd:` spawns one netcat per guest connection; a `tcp:` chardev would carry only the first connection.
    ...s.guestForwards.map((f) => {
      const [guest, host] = f.split("=");
      const [addr, port] = host.split(":");
      return `guestfwd=tcp:${guest}-cmd:nc ${addr} ${port}`;
    }),
  ].join(",");
  return [
    "-name", `spuff-${s.name}`,
    ...accelArgs(s.accel),
    "-smp", String(s.cpus),
    "-m", String(s.memoryMiB),
    "-display", "none",
    "-monitor", "none",
    "-serial", `file:${s.console}`,
    "-qmp", `unix:${s.qmp},server=on,wait=off`,
    "-pidfile", s.pidfile,
    ...(s.kernel && s.initrd ? ["-kernel", s.kernel, "-initrd", s.initrd, "-append", "root=/dev/vda rw console=ttyS0"] : []),
    "-drive", `file=${s.overlay},if=virtio,format=qcow2`,
    "-drive", `file=${s.seed},media=cdrom,readonly=on`,
    ...(s.workspace
      ? ["-drive", `file=${s.workspace.file},if=none,id=workspace-disk,format=qcow2`, "-device", `virtio-blk-pci,id=workspace,drive=workspace-disk,serial=${s.workspace.serial},addr=0x10`]
      : []),
    ...(s.network === "nat" ? ["-netdev", `socket,id=net0,fd=${PASST_FD}`, "-device", "virtio-net-pci,netdev=net0"] : ["-nic", nic]),
  ];
}

/** The pid in `pidfile` if that process is alive and is QEMU (`what`; not a reused pid). */
export function livePid(pidfile: string, what = "qemu-system"): number | undefined {
  if (!existsSync(pidfile)) return undefined;
  const pid = Number(readFileSync(pidfile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return undefined;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.includes(what)) return undefined;
  } catch {
    if (platform() === "linux") return undefined;
  }
  return pid;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Whether TCP `port` on 127.0.0.1 can be listened on now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** Sends QMP commands (after the capabilities handshake); resolves when the socket closes or after a timeout. */
export function qmp(socket: string, commands: string[], timeoutMs = 3000): Promise<void> {
  return new Promise((resolve) => {
    const c = createConnection(socket);
    const timer = setTimeout(() => {
      c.destroy();
      resolve();
    }, timeoutMs);
    c.on("error", () => {
      clearTimeout(timer);
      resolve();
    });
    c.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
    c.once("data", () => {
      c.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
      for (const cmd of commands) c.write(`${JSON.stringify({ execute: cmd })}\n`);
    });
  });
}

export function hasCommand(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** "2G", "512M", 2048 (MiB) → MiB. */
export function toMiB(size: string | number): number {
  if (typeof size === "number") return size;
  const m = /^(\d+)\s*([KMGT]?)i?B?$/i.exec(size.trim());
  if (!m) throw new Error(`bad size ${size}`);
  const n = Number(m[1]);
  switch (m[2].toUpperCase()) {
    case "K":
      return Math.ceil(n / 1024);
    case "G":
      return n * 1024;
    case "T":
      return n * 1024 * 1024;
    default:
      return n;
  }
}

export interface Passt {
  pid: number;
  /** Connected to passt; handed to QEMU as fd PASST_FD, then closed here. */
  socket: Socket;
}

/**
 * Starts passt detached for the VM in `dir` (pid in dir/passt.pid, log in dir/passt.log) and connects to it. passt drops
 * root to `nobody` before it creates its socket, so as root its socket directory belongs to nobody.
 */
export async function startPasst(dir: string, sshPort: number): Promise<Passt> {
  await stopPasst(dir); // a previous try's (its QEMU did not run)
  // Under the temp dir: every directory above the socket must be searchable by passt's user, and a socket path is
  // limited to 108 bytes.
  const sockDir = mkdtempSync(join(tmpdir(), "spuff-passt-"));
  writeFileSync(join(dir, "passt.dir"), `${sockDir}\n`);
  if (process.getuid?.() === 0) {
    const id = (flag: string) => Number(spawnSync("id", [flag, "nobody"], { encoding: "utf8" }).stdout.trim());
    chownSync(sockDir, id("-u"), id("-g"));
  }
  const socket = join(sockDir, "passt.sock");
  const log = join(dir, "passt.log");
  const fd = openSync(log, "w");
  const child = spawn("passt", passtArgs({ socket, sshPort }), { detached: true, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  let exited = false;
  child.once("exit", () => (exited = true));
  child.once("error", () => (exited = true));
  child.unref();
  if (child.pid) writeFileSync(join(dir, "passt.pid"), `${child.pid}\n`);
  const deadline = Date.now() + 5000;
  const why = () => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").slice(-3).join(" | ") : "") || "no output";
  while (!existsSync(socket)) {
    if (exited || Date.now() > deadline) {
      if (!exited) child.kill("SIGKILL");
      throw new Error(`passt did not start: ${why()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const conn = await new Promise<Socket>((resolve, reject) => {
    const c = createConnection(socket);
    c.once("connect", () => resolve(c));
    c.once("error", reject);
  }).catch((e: Error) => {
    child.kill("SIGKILL");
    throw new Error(`cannot connect to passt: ${e.message}`);
  });
  return { pid: child.pid as number, socket: conn };
}

/**
 * Ends passt when QEMU `qemuPid` is gone, however it ends (down, guest poweroff, crash, SIGKILL): a detached shell
 * that outlives spuff. passt itself does not exit when QEMU disconnects.
 */
export function tiePasstToQemu(qemuPid: number, passtPid: number): void {
  const w = spawn("sh", ["-c", `while kill -0 ${qemuPid} 2>/dev/null; do sleep 1; done; kill ${passtPid} 2>/dev/null`], { detached: true, stdio: "ignore" });
  w.unref();
}

/** Stops the VM's passt if it still runs (pid in dir/passt.pid, checked to be passt) and removes its socket directory. */
export async function stopPasst(dir: string): Promise<void> {
  const pidfile = join(dir, "passt.pid");
  const sockDir = existsSync(join(dir, "passt.dir")) ? readFileSync(join(dir, "passt.dir"), "utf8").trim() : "";
  if (sockDir.startsWith(join(tmpdir(), "spuff-passt-"))) rmSync(sockDir, { recursive: true, force: true });
  const pid = livePid(pidfile, "passt");
  if (pid === undefined) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 3000;
  while (livePid(pidfile, "passt") !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (livePid(pidfile, "passt") !== undefined) process.kill(pid, "SIGKILL");
}
