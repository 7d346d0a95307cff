import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { arch, platform } from "node:os";
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
}

/** QEMU arguments: user networking with restrict=on (no network for the guest), SSH forwarded on loopback only. */
export function qemuArgs(s: QemuSpec): string[] {
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
    "-nic", nic,
  ];
}

/** The pid in `pidfile` if that process is alive and is QEMU (not a reused pid). */
export function livePid(pidfile: string): number | undefined {
  if (!existsSync(pidfile)) return undefined;
  const pid = Number(readFileSync(pidfile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return undefined;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.includes("qemu-system")) return undefined;
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
