import { execFileSync, type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { builtImageDir } from "../../providers/local/image.js";
import { passtArgs, qemuArgs } from "../../providers/local/qemu.js";
import { runCli, tempHome, writeUserConfig } from "../helpers/cli.js";

// local.network nat on a real VM: outbound works, this machine's loopback does not, nothing listens beyond 127.0.0.1.
// "The outside" is a second network namespace joined by a veth pair, so nothing leaves this machine. It only runs
// inside the suite's own network namespace (test/run-isolated.sh as root), never in the machine's real one.
const cacheDir = process.env.SPUFF_CACHE_DIR ?? join(process.env.HOME ?? "/root", ".cache", "spuff");
const imageReady = existsSync(join(builtImageDir(cacheDir, "debian-13"), "disk.qcow2"));
const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout ?? "";
const isolated = process.getuid?.() === 0 && links.trim().split("\n").length === 1 && links.includes(": lo:");
const hasPasst = spawnSync("sh", ["-c", "command -v passt"]).status === 0;

const OUTSIDE = "203.0.113.7";
const GATEWAY = "198.51.100.254";
const PORT = 18080;

describe("local.network: the QEMU command lines", () => {
  const spec = {
    name: "n", accel: "tcg" as const, cpus: 1, memoryMiB: 512, overlay: "/d.qcow2", seed: "/s.iso", sshPort: 2222,
    guestForwards: [], pidfile: "/q.pid", qmp: "/q.sock", console: "/c.log",
  };
  it("none: slirp with restrict=on (no network for the guest), SSH forwarded from 127.0.0.1 only, no passt", () => {
    const args = qemuArgs({ ...spec, network: "none" });
    expect(args[args.indexOf("-nic") + 1]).toBe("user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22");
    expect(args.join(" ")).not.toContain("socket,");
  });
  it("nat: QEMU's only NIC is the passt socket; passt does not map the gateway to this machine and binds SSH on 127.0.0.1", () => {
    const args = qemuArgs({ ...spec, network: "nat" });
    expect(args).not.toContain("-nic");
    expect(args.join(" ")).toContain("-netdev socket,id=net0,fd=3 -device virtio-net-pci,netdev=net0");
    expect(passtArgs({ socket: "/p.sock", sshPort: 2222 })).toEqual([
      "--no-map-gw", "--foreground", "--quiet", "--socket", "/p.sock", "--tcp-ports", "127.0.0.1/2222:22", "--udp-ports", "none",
    ]);
    expect(() => qemuArgs({ ...spec, network: "nat", guestForwards: ["10.0.2.100:22=127.0.0.1:1"] })).toThrow(/none/);
  });
});

describe.skipIf(!imageReady || !isolated || !hasPasst)("local VM with local.network: nat", { timeout: 15 * 60_000 }, () => {
  const t = tempHome();
  const ns = `spuff-outside-${process.pid}`;
  const env = { ...t.env, SPUFF_CACHE_DIR: cacheDir };
  const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
  const vmDir = join(stateDir, "local", "net");
  const spuff = (...argv: string[]) => runCli(argv, { env, cwd: t.home });
  const inVm = async (cmd: string) => (await spuff("ssh", "net", "--no-agent", "--", cmd)).stdout.trim();
  let outside: ChildProcess;
  let loopback: Server;
  const ip = (...a: string[]) => execFileSync("ip", a, { stdio: ["ignore", "ignore", "pipe"] });

  beforeAll(async () => {
    ip("netns", "add", ns);
    ip("link", "add", "spuff-in", "type", "veth", "peer", "name", "spuff-out", "netns", ns);
    ip("addr", "add", "198.51.100.1/24", "dev", "spuff-in");
    ip("link", "set", "spuff-in", "up");
    ip("route", "add", "default", "via", GATEWAY);
    ip("-n", ns, "addr", "add", `${GATEWAY}/24`, "dev", "spuff-out");
    ip("-n", ns, "link", "set", "spuff-out", "up");
    ip("-n", ns, "link", "set", "lo", "up");
    ip("-n", ns, "addr", "add", `${OUTSIDE}/32`, "dev", "lo");
    const server = `require("http").createServer((q,s)=>s.end("from-outside")).listen(${PORT},"${OUTSIDE}",()=>console.log("up"))`;
    outside = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", server], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise((r) => outside.stdout?.once("data", r));
    // What the VM must not reach: a service on this machine's loopback, on the same port, as slirp's nat would map it.
    loopback = createServer((_q, s) => s.end("from-this-machine")).listen(PORT, "127.0.0.1");
    writeUserConfig(t.env, stringify({ provider: "local", local: { cpus: 2, memory: "1G", disk: "4G", network: "nat" } }));
  });

  afterAll(async () => {
    await runCli(["down", "net", "--yes"], { env, cwd: t.home }).catch(() => {});
    spawnSync("sh", ["-c", `for f in ${stateDir}/local/*/qemu.pid ${stateDir}/local/*/passt.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done`]);
    outside?.kill();
    loopback?.close();
    spawnSync("ip", ["netns", "del", ns]);
    spawnSync("ip", ["link", "del", "spuff-in"]);
    t.cleanup();
  });

  let passtPid = 0;
  it("spuff up boots it", async () => {
    const started = Date.now();
    const r = await spuff("up", "net");
    expect(r.stderr).toContain("✓ wait SSH");
    expect(r.code).toBe(0);
    console.log(`local-network: up (nat) to ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    passtPid = Number(readFileSync(join(vmDir, "passt.pid"), "utf8"));
    expect(readFileSync(`/proc/${passtPid}/cmdline`, "utf8")).toContain("passt");
  });

  it("the VM reaches a server outside this machine", async () => {
    expect(await inVm(`curl -sS -m 10 http://${OUTSIDE}:${PORT}/`)).toBe("from-outside");
  });

  it("the VM does not reach this machine's 127.0.0.1 through its gateway (nor slirp's 10.0.2.2)", async () => {
    const gw = await inVm("ip route show default | cut -d' ' -f3");
    expect(gw).toBe(GATEWAY);
    for (const addr of [gw, "10.0.2.2"]) {
      expect(await inVm(`curl -sS -m 5 http://${addr}:${PORT}/ 2>/dev/null; echo "exit=$?"`)).toMatch(/^exit=[1-9]\d*$/);
    }
  });

  it("nothing of passt or QEMU listens beyond 127.0.0.1 on this machine", () => {
    const qemuPid = Number(readFileSync(join(vmDir, "qemu.pid"), "utf8"));
    const ss = execFileSync("ss", ["-Hltnup"], { encoding: "utf8" }).split("\n").filter((l) => new RegExp(`pid=(${qemuPid}|${passtPid}),`).test(l));
    expect(ss.length).toBeGreaterThan(0); // the SSH forward
    for (const line of ss) expect(line.split(/\s+/)[4]).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it("a QEMU that dies (here SIGKILL) takes its passt with it; down then leaves nothing", async () => {
    const sockDir = readFileSync(join(vmDir, "passt.dir"), "utf8").trim();
    expect(existsSync(sockDir)).toBe(true);
    process.kill(Number(readFileSync(join(vmDir, "qemu.pid"), "utf8")), "SIGKILL");
    const deadline = Date.now() + 10_000;
    while (existsSync(`/proc/${passtPid}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(`/proc/${passtPid}`)).toBe(false);
    expect((await spuff("down", "net", "--yes")).code).toBe(0);
    expect(existsSync(vmDir)).toBe(false);
    expect(existsSync(sockDir)).toBe(false);
  });
});
