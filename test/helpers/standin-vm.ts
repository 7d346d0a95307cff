import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
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
 */
export interface StandinVm {
  host: string;
  port: number;
  pid: number;
  user: string;
  stop(): Promise<void>;
}

interface CloudConfig {
  ssh_keys?: Record<string, string>;
  users?: ({ name: string; ssh_authorized_keys?: string[] } | string)[];
}

export function parseUserData(userData: string | Buffer): CloudConfig {
  const text = Buffer.isBuffer(userData) ? userData.toString("utf8") : userData;
  if (!text.startsWith("#cloud-config")) throw new Error("user-data is not a #cloud-config document");
  return parse(text) as CloudConfig;
}

export async function startStandinVm(userData: string | Buffer, host: string, port = 22, waitForAddressMs = 90_000): Promise<StandinVm> {
  const cfg = parseUserData(userData);
  const hostKey = cfg.ssh_keys?.ed25519_private;
  if (!hostKey) throw new Error("user-data has no ssh_keys.ed25519_private");
  const firstUser = cfg.users?.find((u): u is { name: string; ssh_authorized_keys?: string[] } => typeof u === "object");
  if (!firstUser?.ssh_authorized_keys?.length) throw new Error("user-data has no user with ssh_authorized_keys");

  const dir = mkdtempSync(join(tmpdir(), "spuff-standin-"));
  chmodSync(dir, 0o755);
  const bin = join(dir, "bin");
  mkdirSync(bin);
  writeFileSync(join(dir, "host_ed25519"), hostKey.endsWith("\n") ? hostKey : `${hostKey}\n`, { mode: 0o600 });
  writeFileSync(join(dir, "authorized_keys"), `${firstUser.ssh_authorized_keys.join("\n")}\n`, { mode: 0o644 });
  writeFileSync(join(bin, "cloud-init"), '#!/bin/sh\necho "status: done"\n', { mode: 0o755 });
  writeFileSync(
    join(dir, "sshd_config"),
    [
      `ListenAddress ${host.includes(":") ? `[${host}]` : host}:${port}`,
      `HostKey ${join(dir, "host_ed25519")}`,
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
  for (;;) {
    const child: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    const listening = new Promise<void>((resolve) => {
      child.stderr?.on("data", (d: Buffer) => {
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
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return {
      host,
      port,
      pid: child.pid ?? 0,
      user: firstUser.name,
      stop: () => stopSshd(child, dir),
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
