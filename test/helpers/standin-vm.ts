import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  watch,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { parse } from "yaml";
import { BAKE_CLEAN, ROTATE_HOST_KEY } from "../../src/cloudinit/index.js";
import { stopSshd } from "./sshd.js";

/**
 * A real OpenSSH sshd standing in for a cloud VM in provider tests (the Hetzner fake and moto create no machines).
 * It "boots" from the user-data spuff sent: it serves the host key spuff pinned in `ssh_keys` and authorises the keys
 * of the first user in `users`, so spuff's host-key pinning and per-VM key are exercised for real. It listens on the
 * address the fake handed out (a loopback address, port 22 — tests run in their own network namespace as root).
 * IPv6 loopback is only ::1, which the Hetzner and AWS fakes both hand out to IPv6-only machines: while another
 * stand-in (of a test file running in parallel) holds the address, a start waits for it to be released (up to
 * `waitForAddressMs`) instead of failing; neither fake lets spuff connect before its own stand-in runs (the moto proxy
 * answers RunInstances after starting it, the Hetzner fake reports the server running after it), so spuff never meets
 * another test's sshd there.
 * The VM's cloud-init is stood in by a `cloud-init` program on the session PATH that reports `status: done`; the real
 * cloud-init run is proven by the QEMU end-to-end test.
 *
 * Host key rotation (docs/adr/0008-host-key-rotation.md) runs for real: the stand-in installs the rotate script from
 * the user-data's write_files (as cloud-init would) into `lib/`, its sshd reads the host key from `keys/` and the
 * files cloud-init keeps from `cloud/instances/`. A `sudo` on the session PATH runs that one script (and a bake's
 * cleaning, and `tail` of a `cloud-init-output.log` a test put in the stand-in's directory; nothing else)
 * as the login user on those files, which that user owns here; the stand-in sends sshd the SIGHUP that
 * `systemctl reload` would. Nothing runs with the test machine's own sudo or touches its /etc/ssh.
 */
export interface StandinVm {
  host: string;
  port: number;
  pid: number;
  user: string;
  /** The stand-in's directory: keys/ (host key), cloud/instances/ (cloud-init's copies), lib/ (rotate script). */
  dir: string;
  /** The host key file its sshd serves. */
  hostKeyFile: string;
  /** Logins its sshd accepted so far ("Accepted publickey" in its log, across its reloads). */
  logins(): number;
  /** Connections its sshd took so far, with or without a login ("Connection from" in its log, across its reloads). */
  connections(): number;
  stop(): Promise<void>;
}

interface CloudConfig {
  ssh_keys?: Record<string, string>;
  users?: ({ name: string; ssh_authorized_keys?: string[] } | string)[];
  write_files?: { path: string; content: string }[];
}

/** The network namespace this process is in: stand-ins of one test run (one namespace) share its loopback. */
function netnsId(): string {
  try {
    return readlinkSync("/proc/self/ns/net").replace(/\D/g, "");
  } catch {
    return "0";
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Holds an address for one stand-in until released. sshd closes its listening socket for a moment when it reloads
 * (it re-executes itself), so "Address already in use" alone would let a waiting stand-in take ::1 in that moment.
 */
async function lockAddress(host: string, port: number, deadline: number): Promise<() => void> {
  const file = join(tmpdir(), `spuff-standin-${netnsId()}-${host.replaceAll(":", "_")}-${port}.lock`);
  for (;;) {
    try {
      const fd = openSync(file, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    let owner = 0;
    try {
      owner = Number(readFileSync(file, "utf8"));
    } catch {
      continue;
    }
    if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
      rmSync(file, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${host}:${port} is still held by another stand-in VM (${file})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The stand-in's sudo: only `sudo -n <rotate script> ARGS`, run from this stand-in's copy on its own files. */
function sudoShim(dir: string): string {
  const env = [
    "PATH=/usr/local/bin:/usr/bin:/bin",
    `SPUFF_HOST_KEY=${join(dir, "keys", "ssh_host_ed25519_key")}`,
    `SPUFF_CLOUD_DIR=${join(dir, "cloud")}`,
    `SPUFF_CLOUD_RUN_DIR=${join(dir, "cloud-run")}`,
    `SPUFF_SSHD_RELOAD_REQUEST=${join(dir, "keys", "reload-request")}`,
  ];
  return [
    "#!/bin/sh",
    "# Stand-in VM: sudo runs spuff's host key rotation script only (see test/helpers/standin-vm.ts).",
    `if [ "$1" = -n ] && [ "$2" = ${ROTATE_HOST_KEY} ]; then`,
    "  shift 2",
    `  exec env -i ${env.join(" ")} /bin/bash ${join(dir, "lib", "rotate-host-key")} "$@"`,
    "fi",
    // A bake VM's cleaning (docs/images.md) runs on root/, a directory standing in for the VM's /.
    `if [ "$1" = -n ] && [ "$2" = ${BAKE_CLEAN} ] && [ -f ${join(dir, "lib", "bake-clean")} ]; then`,
    "  shift 2",
    `  exec env -i PATH=/usr/local/bin:/usr/bin:/bin SPUFF_BAKE_ROOT=${join(dir, "root")} /bin/sh ${join(dir, "lib", "bake-clean")} "$@"`,
    "fi",
    // What spuff reads of a failed boot: the tail of the log a test wrote for cloud-init.
    `if [ "$1" = tail ] && [ "$2" = -n ] && [ "$4" = /var/log/cloud-init-output.log ] && [ -f ${join(dir, "cloud-init-output.log")} ]; then`,
    `  exec tail -n "$3" ${join(dir, "cloud-init-output.log")}`,
    "fi",
    'echo "sudo (stand-in VM): only the host key rotation, a bake\'s cleaning and the cloud-init log run as root here" >&2',
    "exit 1",
    "",
  ].join("\n");
}

/**
 * The user-data as cloud-init reads it: plain text, or gzip (a large user-data), which Hetzner's API gets as base64
 * (cloud-init's Hetzner datasource base64-decodes it first) and EC2 as bytes.
 */
export function userDataText(userData: string | Buffer): string {
  const raw = Buffer.isBuffer(userData) ? userData : userData.startsWith("#") ? undefined : Buffer.from(userData, "base64");
  if (raw && raw[0] === 0x1f && raw[1] === 0x8b) return gunzipSync(raw).toString("utf8");
  return Buffer.isBuffer(userData) ? userData.toString("utf8") : userData;
}

export function parseUserData(userData: string | Buffer): CloudConfig {
  const text = userDataText(userData);
  if (!text.startsWith("#cloud-config")) throw new Error("user-data is not a #cloud-config document");
  return parse(text) as CloudConfig;
}

export async function startStandinVm(userData: string | Buffer, host: string, port = 22, waitForAddressMs = 90_000): Promise<StandinVm> {
  const cfg = parseUserData(userData);
  const hostKey = cfg.ssh_keys?.ed25519_private;
  if (!hostKey) throw new Error("user-data has no ssh_keys.ed25519_private");
  const firstUser = cfg.users?.find((u): u is { name: string; ssh_authorized_keys?: string[] } => typeof u === "object");
  if (!firstUser?.ssh_authorized_keys?.length) throw new Error("user-data has no user with ssh_authorized_keys");

  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync("id", ["-u", firstUser.name], { encoding: "utf8" }));
    gid = Number(execFileSync("id", ["-g", firstUser.name], { encoding: "utf8" }));
  } catch {
    throw new Error(`the stand-in VM's login user "${firstUser.name}" does not exist here; run \`bash test/setup.sh\``);
  }

  const dir = mkdtempSync(join(tmpdir(), "spuff-standin-"));
  chmodSync(dir, 0o755);
  const bin = join(dir, "bin");
  mkdirSync(bin);
  // What cloud-init would have written: the host key pair from ssh_keys, its copies of the user-data, the scripts.
  const keys = join(dir, "keys");
  mkdirSync(keys, { mode: 0o700 });
  const hostKeyFile = join(keys, "ssh_host_ed25519_key");
  writeFileSync(hostKeyFile, hostKey.endsWith("\n") ? hostKey : `${hostKey}\n`, { mode: 0o600 });
  writeFileSync(`${hostKeyFile}.pub`, `${cfg.ssh_keys?.ed25519_public ?? ""}\n`, { mode: 0o644 });
  const instance = join(dir, "cloud", "instances", "i-standin");
  mkdirSync(join(instance, "sem"), { recursive: true, mode: 0o700 });
  const text = userDataText(userData);
  for (const f of ["user-data.txt", "user-data.txt.i", "cloud-config.txt", "obj.pkl"]) writeFileSync(join(instance, f), text, { mode: 0o600 });
  writeFileSync(join(instance, "sem", "config_ssh"), "", { mode: 0o600 });
  // cloud-init 24+ also keeps the merged config (host keys included) in its run directory.
  mkdirSync(join(dir, "cloud-run"), { mode: 0o700 });
  writeFileSync(join(dir, "cloud-run", "combined-cloud-config.json"), JSON.stringify({ ssh_keys: cfg.ssh_keys ?? {} }), { mode: 0o600 });
  symlinkSync(instance, join(dir, "cloud", "instance"));
  const rotate = cfg.write_files?.find((f) => f.path === ROTATE_HOST_KEY);
  if (rotate) {
    mkdirSync(join(dir, "lib"));
    writeFileSync(join(dir, "lib", "rotate-host-key"), rotate.content, { mode: 0o755 });
  }
  const clean = cfg.write_files?.find((f) => f.path === BAKE_CLEAN);
  if (clean) {
    // A bake VM: its script, and a root/ with what a booted VM has that the cleaning must remove (and a file it keeps).
    mkdirSync(join(dir, "lib"), { recursive: true });
    writeFileSync(join(dir, "lib", "bake-clean"), clean.content, { mode: 0o755 });
    const root = join(dir, "root");
    const files: Record<string, string> = {
      "etc/ssh/ssh_host_ed25519_key": hostKey,
      "etc/ssh/ssh_host_ed25519_key.pub": `${cfg.ssh_keys?.ed25519_public ?? ""}\n`,
      "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
      "etc/spuff/idle.conf": "EXPIRES_AT=1\n",
      [`home/${firstUser.name}/.ssh/authorized_keys`]: `${firstUser.ssh_authorized_keys.join("\n")}\n`,
      [`home/${firstUser.name}/.bash_history`]: "echo secret\n",
      [`home/${firstUser.name}/.local/bin/tool`]: "#!/bin/sh\n",
      "var/log/syslog": "boot log\n",
      "var/log/syslog.1": "older log\n",
      "var/lib/cloud/instance/user-data.txt": text,
    };
    for (const [rel, content] of Object.entries(files)) {
      mkdirSync(join(root, rel, ".."), { recursive: true });
      writeFileSync(join(root, rel), content, { mode: 0o600 });
    }
    execFileSync("chown", ["-R", `${uid}:${gid}`, root]);
  }
  // On a VM root owns these; here the login user does, so that the rotate script can run without the real sudo.
  for (const p of [keys, hostKeyFile, `${hostKeyFile}.pub`, join(dir, "cloud"), join(dir, "cloud", "instances"), instance, join(instance, "sem"), join(dir, "cloud-run"), join(dir, "cloud-run", "combined-cloud-config.json")]) chownSync(p, uid, gid);
  for (const f of ["user-data.txt", "user-data.txt.i", "cloud-config.txt", "obj.pkl", "sem/config_ssh"]) chownSync(join(instance, f), uid, gid);
  writeFileSync(join(dir, "authorized_keys"), `${firstUser.ssh_authorized_keys.join("\n")}\n`, { mode: 0o644 });
  writeFileSync(join(bin, "cloud-init"), '#!/bin/sh\necho "status: done"\n', { mode: 0o755 });
  writeFileSync(join(bin, "sudo"), sudoShim(dir), { mode: 0o755 });
  writeFileSync(
    join(dir, "sshd_config"),
    [
      `ListenAddress ${host.includes(":") ? `[${host}]` : host}:${port}`,
      `HostKey ${hostKeyFile}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AllowAgentForwarding yes",
      `SetEnv PATH=${bin}:/usr/local/bin:/usr/bin:/bin`,
      // VERBOSE for sshd's "Server listening on ..." line: proof that this sshd (not another one) holds the address.
      "LogLevel VERBOSE",
    ].join("\n"),
  );
  mkdirSync("/run/sshd", { recursive: true });
  const deadline = Date.now() + waitForAddressMs;
  let release: () => void;
  try {
    release = await lockAddress(host, port, deadline);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  for (;;) {
    const child: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    let logins = 0;
    let connections = 0;
    let line = "";
    const listening = new Promise<void>((resolve) => {
      child.stderr?.on("data", (d: Buffer) => {
        const lines = (line + d.toString()).split("\n");
        line = lines.pop() ?? "";
        logins += lines.filter((l) => l.includes("Accepted publickey for ")).length;
        connections += lines.filter((l) => l.includes("Connection from ")).length;
        stderr = (stderr + d.toString()).slice(-20_000);
        if (/Server listening on /.test(stderr)) resolve();
      });
    });
    const exited = new Promise<never>((_, reject) => {
      child.once("exit", (code) => reject(new Error(`stand-in sshd exited (${code}): ${stderr.trim()}`)));
      // No sshd at all: say so (test/setup.d/10-base.sh installs openssh-server).
      child.once("error", (err) => reject(new Error(`cannot start the stand-in sshd (/usr/sbin/sshd): ${err.message}; run \`bash test/setup.sh\``)));
    });
    exited.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const slow = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`sshd on ${host}:${port} did not start: ${stderr.trim()}`)), 10_000);
    });
    try {
      await Promise.race([listening, exited, slow]);
    } catch (err) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      if (/Address already in use/.test(stderr) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      rmSync(dir, { recursive: true, force: true });
      release();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    // The rotate script's reload: SIGHUP to sshd (it re-executes itself with the new key), then the request goes.
    const request = join(keys, "reload-request");
    const reloader = watch(keys, () => {
      if (!existsSync(request)) return;
      child.kill("SIGHUP");
      rmSync(request, { force: true });
    });
    return {
      host,
      port,
      pid: child.pid ?? 0,
      user: firstUser.name,
      dir,
      hostKeyFile,
      logins: () => logins,
      connections: () => connections,
      stop: async () => {
        reloader.close();
        await stopSshd(child, dir);
        release();
      },
    };
  }
}

/**
 * A cloud fake's server hooks that give every created server a stand-in sshd on its address (IPv6-only: ::1) and stop
 * it when the server is deleted. `standins` holds the running ones, by server id.
 */
export function standinHooks(standins: Map<number, StandinVm>) {
  return {
    onServerCreated: async (s: { id: number; userData: string; ipv4: string | null }) => {
      standins.set(s.id, await startStandinVm(s.userData, s.ipv4 ?? "::1"));
    },
    onServerDeleted: async (s: { id: number }) => {
      await standins.get(s.id)?.stop();
      standins.delete(s.id);
    },
  };
}
