import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { builtImageDir } from "../../providers/local/image.js";
import { BIN, runCli, tempHome, writeUserConfig } from "../helpers/cli.js";

// Warm start on real QEMU (docs/adr/0009-local-warm-start.md): two local VMs restored from the same saved machine
// state, at once, each with its own identity. The first `up` saves the state if the cache has none for this image,
// QEMU and config yet (one cold boot of a warm-up VM); the second always restores it.
const cacheDir = process.env.SPUFF_CACHE_DIR ?? join(process.env.HOME ?? "/root", ".cache", "spuff");
const imageReady = existsSync(join(builtImageDir(cacheDir, "debian-13"), "disk.qcow2"));
const NAMES = ["warm-a", "warm-b"] as const;
/** The phases of `up --json` that finished, in order. */
const phasesDone = (stdout: string) =>
  stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { event: string; phase?: string; status?: string })
    .filter((e) => e.event === "phase" && e.status === "done")
    .map((e) => e.phase);

describe.skipIf(!imageReady || !existsSync(BIN))("warm start of local VMs", { timeout: 20 * 60_000 }, () => {
  const t = tempHome();
  let env: NodeJS.ProcessEnv;
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const spuff = (...argv: string[]) => runCli(argv, { env, cwd: t.home });
  const record = (name: string) => JSON.parse(readFileSync(join(stateDir, "vms", name, "vm.json"), "utf8"));
  const loginKey = (name: string) => join(stateDir, "vms", name, "id_ed25519");
  const bare = (line: string) => line.trim().split(" ").slice(0, 2).join(" ");
  /** Plain OpenSSH with strict host key checking against spuff's known_hosts, as `alias`, with `key` only. */
  const plainSsh = (port: number, alias: string, key: string, command: string) =>
    spawnSync(
      "ssh",
      [
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", `UserKnownHostsFile=${join(stateDir, "known_hosts")}`,
        "-o", `HostKeyAlias=${alias}`,
        "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=60",
        "-i", key,
        "-p", String(port),
        "dev@127.0.0.1",
        command,
      ],
      { encoding: "utf8", env: { PATH: process.env.PATH } },
    );

  beforeAll(() => {
    writeUserConfig(t.env, stringify({ provider: "local", local: { cpus: 2, memory: "1G", disk: "4G", network: "none" } }));
    env = { ...t.env, SPUFF_CACHE_DIR: cacheDir };
  });

  afterAll(async () => {
    for (const n of NAMES) await runCli(["down", n, "--purge", "--yes"], { env, cwd: t.home }).catch(() => {});
    spawnSync("sh", ["-c", `for f in ${stateDir}/local/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done`]);
    t.cleanup();
  });

  it("two `spuff up` restore the saved state (the second without saving it again) and pass the checks of a cold up, without a host key rotation", async () => {
    // The first as `--json`: its phase events; the second as a person sees it.
    const a = await spuff("--json", "up", NAMES[0]);
    expect(a.code, a.stderr).toBe(0);
    const done = phasesDone(a.stdout).filter((p) => !p?.startsWith("save machine state"));
    expect(done).toEqual(["validate config", "workspace volume", "seed", "restore", "identity", "wait running", "wait SSH", "cloud-init", "ready"]);
    const b = await spuff("up", NAMES[1]);
    expect(b.code, b.stderr).toBe(0);
    for (const phase of ["restore", "identity", "wait SSH", "cloud-init"]) expect(b.stderr).toContain(`✓ ${phase}`);
    for (const phase of ["boot", "rotate host key", "save machine state"]) expect(b.stderr).not.toContain(`• ${phase}`);
    expect(b.stdout).toContain(`${NAMES[1]} is ready`);
    const ls = JSON.parse((await spuff("--json", "ls")).stdout) as { name: string; status: string }[];
    expect(ls.filter((v) => v.status === "running").map((v) => v.name).sort()).toEqual([...NAMES]);
  });

  it("each presents its own host key, made on it after the restore and pinned alone; its seed holds no host key", () => {
    const presented = NAMES.map((name) => {
      const rec = record(name);
      const scan = execFileSync("ssh-keyscan", ["-T", "30", "-t", "ed25519", "-p", String(rec.endpoint.port), "127.0.0.1"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
      const key = scan.trim().split(" ").slice(1, 3).join(" ");
      expect(key).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI/);
      expect(rec.hostKey).toBe(key);
      expect(rec.nextHostKey).toBeUndefined();
      // The seed (for a later cold boot) is the VM's user-data without a host key pair: no private key of this VM was
      // ever outside it.
      const ud = execFileSync("isoinfo", ["-R", "-i", join(stateDir, "local", name, "seed.iso"), "-x", "/user-data"], { encoding: "utf8" });
      expect(ud.startsWith("#cloud-config\n")).toBe(true);
      expect(parse(ud).hostname).toBe(name);
      expect(parse(ud).ssh_keys).toBeUndefined();
      expect(ud).not.toContain("PRIVATE KEY");
      return key;
    });
    expect(presented[0]).not.toBe(presented[1]);
    expect(readFileSync(join(stateDir, "known_hosts"), "utf8").trim().split("\n").sort()).toEqual(NAMES.map((n, i) => `spuff-${n} ${presented[i]}`).sort());
  });

  it("plain OpenSSH reaches each with strict host key checking; each takes its own login key only", () => {
    const ports = NAMES.map((n) => record(n).endpoint.port as number);
    const ids = NAMES.map((name, i) => {
      const r = plainSsh(ports[i], `spuff-${name}`, loginKey(name), "hostname; cat /etc/machine-id; cat ~/.ssh/authorized_keys");
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const [hostname, machineId, ...authorized] = r.stdout.trim().split("\n");
      expect(hostname).toBe(name);
      expect(machineId).toMatch(/^[0-9a-f]{32}$/);
      // Exactly this VM's login key: none of the other VM's, none of the warm-up VM's.
      const own = bare(execFileSync("ssh-keygen", ["-y", "-f", loginKey(name)], { encoding: "utf8" }));
      expect(authorized.map(bare)).toEqual([own]);
      return machineId;
    });
    expect(ids[0]).not.toBe(ids[1]);
    // The other VM's login key is refused; the other VM's pinned key does not match this one.
    const cross = plainSsh(ports[1], "spuff-warm-b", loginKey("warm-a"), "true");
    expect(cross.stderr).toContain("Permission denied (publickey)");
    expect(cross.status).toBe(255);
    const impostor = plainSsh(ports[1], "spuff-warm-a", loginKey("warm-b"), "true");
    expect(impostor.stderr).toContain("Host key verification failed");
    expect(impostor.status).toBe(255);
  });

  it("what a cold VM has: cloud-init done, the idle watcher running with this VM's TTL, its own clock, no private key but its host key", async () => {
    const rec = record("warm-b");
    const status = JSON.parse((await spuff("--json", "status", "warm-b")).stdout) as { expiresAt: string };
    const r = await spuff(
      "ssh", "warm-b", "--no-agent", "--",
      "cloud-init status --long | head -n1; systemctl is-active spuff-idle.timer; grep ^EXPIRES_AT= /etc/spuff/idle.conf; date +%s;",
      // The journal follows the new machine-id.
      "sudo journalctl -q -n 1 --no-pager | grep -c . ;",
      // The identity channel: root's alone in the guest; its service is done.
      "stat -L -c %a:%U /dev/virtio-ports/org.spuff.identity; systemctl is-active spuff-warm-identity.service;",
      "sudo grep -rlI 'PRIVATE KEY' /home /root /etc /var/lib/cloud /run 2>/dev/null || true",
    );
    expect(r.code, r.stderr).toBe(0);
    const [ci, timer, expires, clock, journal, channel, service, ...privateKeys] = r.stdout.trim().split("\n");
    expect(ci).toBe("status: done");
    expect(timer).toBe("active");
    expect(expires).toBe(`EXPIRES_AT=${Math.floor(new Date(status.expiresAt).getTime() / 1000)}`);
    expect(journal).toBe("1");
    expect(channel).toBe("600:root");
    expect(service).toBe("inactive");
    expect(Math.abs(Number(clock) - Date.now() / 1000)).toBeLessThan(120);
    expect(privateKeys).toEqual(["/etc/ssh/ssh_host_ed25519_key"]);
    expect(rec.user).toBe("dev");
  });

  it("each has its own workspace volume at ~/work, plugged in after the restore and mounted as a cold boot mounts it", async () => {
    const seen = [];
    for (const name of NAMES) {
      const r = await spuff("ssh", name, "--no-agent", "--", "findmnt -n -o SOURCE,FSTYPE ~/work; stat -c %U ~/work; ls /dev/disk/by-id/ | grep '^virtio-spuff-ws-'; grep -c ' /home/dev/work ' /etc/fstab");
      expect(r.code, r.stderr).toBe(0);
      const [mount, owner, serial, fstab] = r.stdout.trim().split("\n");
      expect(mount).toMatch(/^\/dev\/vd[b-z] ext4$/);
      expect(owner).toBe("dev");
      expect(fstab).toBe("1");
      seen.push(serial);
    }
    const ws = JSON.parse((await spuff("--json", "workspace", "ls")).stdout) as { name: string; id: string; status: string }[];
    expect(ws.map((w) => [w.name, w.status]).sort()).toEqual(NAMES.map((n) => [n, "attached"]));
    expect(seen.sort()).toEqual(ws.map((w) => `virtio-spuff-ws-${w.id}`).sort());
  });

  it("spuff start boots a warm VM cold from its seed: the same host key, still pinned, its files kept", { timeout: 8 * 60_000 }, async () => {
    const name = NAMES[0];
    const before = record(name).hostKey as string;
    const write = await spuff("ssh", name, "--no-agent", "--", "echo written-warm > marker && sync");
    expect(write.code, write.stderr).toBe(0);
    const pid = Number(readFileSync(join(stateDir, "local", name, "qemu.pid"), "utf8").trim());
    process.kill(pid, "SIGKILL");
    while (spawnSync("kill", ["-0", String(pid)]).status === 0) await new Promise((r) => setTimeout(r, 100));
    const start = await spuff("start", name);
    expect(start.code, start.stderr).toBe(0);
    expect(start.stderr).toContain("✓ wait SSH");
    // cloud-init saw the instance it had run (same instance id): it made no host key of its own.
    expect(record(name).hostKey).toBe(before);
    const r = plainSsh(record(name).endpoint.port, `spuff-${name}`, loginKey(name), "hostname; cat marker; cat /var/lib/cloud/data/instance-id; sudo cat /etc/ssh/ssh_host_ed25519_key.pub");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const [hostname, marker, instance, hostPub] = r.stdout.trim().split("\n");
    expect(hostname).toBe(name);
    expect(marker).toBe("written-warm");
    expect(instance).toBe(`spuff-${name}-${record(name).requestId}`);
    expect(bare(hostPub)).toBe(before);
  });
});
