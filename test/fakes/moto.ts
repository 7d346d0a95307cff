import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { freePort, waitForPort } from "../helpers/sshd.js";
import { type StandinVm, startStandinVm } from "../helpers/standin-vm.js";

/**
 * moto's EC2 server (the real emulator, `python3 -m moto.server` on 127.0.0.1) behind a small loopback HTTP proxy that
 * spuff talks to instead (AWS_ENDPOINT_URL_EC2). The proxy is a fake of AWS, not a mock of spuff: every request goes
 * to moto unchanged, and the proxy only adds what moto lacks or what a test needs to provoke:
 *
 * - addresses: moto hands out made-up public IPs (54.x.x.x). The proxy rewrites each one, in RunInstances and
 *   DescribeInstances answers, to a loopback address `<ipv4Prefix>N` (N from 2), and starts a stand-in sshd there from
 *   the instance's user-data (test/helpers/standin-vm.ts), so `spuff up` finishes its SSH wait for real. Terminating
 *   the instance stops its stand-in.
 * - IPv6: moto gives spuff's instances no IPv6 address (5.1 and 5.2 read only the top-level `Ipv6AddressCount` and
 *   ignore `NetworkInterface.N.Ipv6AddressCount`, which spuff sends), and moto 5.1 cannot create an IPv6-only subnet
 *   at all (CreateSubnet with `Ipv6Native` fails on the missing IPv4 block; 5.2 creates it). The proxy answers as EC2
 *   would: an instance launched with `Ipv6AddressCount` or into an IPv6-only subnet gets the IPv6 loopback `::1` as
 *   its `ipv6Address` and in its primary interface's `ipv6AddressesSet`; one without a public IPv4 gets its stand-in
 *   sshd on [::1]:22 (IPv6 loopback is one address: one such instance at a time, and test/helpers/standin-vm.ts waits
 *   while another test's stand-in holds it). For moto 5.1, a CreateSubnet with `Ipv6Native` that moto refuses for want
 *   of an IPv4 block is made in moto with a placeholder IPv4 /28 from the top of the VPC's block, and the subnet is
 *   then reported as EC2 reports an IPv6-only one (`ipv6Native` true, no `cidrBlock`, `assignIpv6AddressOnCreation`
 *   true). moto's own private address of such an instance (5.1: from the placeholder block; 5.2: an IPv6 one) is left
 *   as moto gives it.
 * - ClientToken: moto 5.2 ignores it (a repeated RunInstances starts a second instance). The proxy keeps EC2's
 *   documented idempotency: a RunInstances with a ClientToken seen before answers the first call's result again.
 * - boot time: moto's instances run at the first DescribeInstances. With `bootDelayMs`, the proxy reports an instance
 *   `pending` until that long after its launch, so a test can interrupt spuff during the SDK waiter.
 * - moto quirks: a subnet's IPv6 block state comes back as EC2 spells it.
 * - CreateImage: moto 5.2 tags only the image (a `snapshot` TagSpecification raises NotImplementedError). The proxy
 *   sends moto the image's TagSpecifications only, then tags the new AMI's EBS snapshot itself (CreateTags), as EC2
 *   does with the same request; "image-created" ({id, snapshots}) is emitted once both are tagged.
 * - faults: `inject()` answers a chosen Action with an EC2 XML error (before or after moto did the work), a canned
 *   body, a delay or a dropped connection.
 *
 * Every request is recorded in `requests` (Action, parameters, status, error code); `events` emits "received" and
 * "request" (answered) with that record, "instance-launched" ({id, ip}) and "instance-terminated" ({id}).
 */

export const DEBIAN_OWNER = "136693071363";

/** The IPv6 address the proxy gives instances (IPv6 loopback has only this one). */
export const IPV6_LOOPBACK = "::1";

/** An AMI as MOTO_AMIS_PATH takes it. */
export interface MotoAmi {
  ami_id: string;
  name: string;
  owner_id: string;
  architecture: "x86_64" | "arm64";
  creation_date: string;
  description?: string;
  root_device_name?: string;
}

/**
 * Debian-like AMIs: two official Debian 13 amd64 builds (the newer one must win), one arm64 build, and traps that must
 * never be picked: a newer image with the same name pattern from another account, a newer Debian 12 build, and a
 * backports build.
 */
export const DEFAULT_AMIS: MotoAmi[] = [
  { ami_id: "ami-0deb13a0000000001", name: "debian-13-amd64-20250815-2000", owner_id: DEBIAN_OWNER, architecture: "x86_64", creation_date: "2025-08-15T20:00:00.000Z" },
  { ami_id: "ami-0deb13a0000000002", name: "debian-13-amd64-20251117-2305", owner_id: DEBIAN_OWNER, architecture: "x86_64", creation_date: "2025-11-17T23:05:00.000Z" },
  { ami_id: "ami-0deb13b0000000003", name: "debian-13-arm64-20251117-2305", owner_id: DEBIAN_OWNER, architecture: "arm64", creation_date: "2025-11-17T23:05:00.000Z" },
  { ami_id: "ami-0bad0000000000004", name: "debian-13-amd64-20260101-0001", owner_id: "999999999999", architecture: "x86_64", creation_date: "2026-01-01T00:01:00.000Z" },
  { ami_id: "ami-0deb12a0000000005", name: "debian-12-amd64-20260105-2000", owner_id: DEBIAN_OWNER, architecture: "x86_64", creation_date: "2026-01-05T20:00:00.000Z" },
  { ami_id: "ami-0deb13d0000000006", name: "debian-13-backports-amd64-20260101-0002", owner_id: DEBIAN_OWNER, architecture: "x86_64", creation_date: "2026-01-01T00:02:00.000Z" },
  { ami_id: "ami-0c0ffee000000007", name: "someones-own-image", owner_id: "123456789012", architecture: "x86_64", creation_date: "2024-03-03T03:03:00.000Z" },
];

export interface MotoFault {
  /** The EC2 Action, e.g. "RunInstances". */
  action: string;
  /** Only requests whose parameters pass this check. */
  match?: (params: URLSearchParams) => boolean;
  /** "before": answer instead of moto (nothing happens); "after": moto does the work, then the answer is replaced. */
  when?: "before" | "after";
  /** How many matching requests this fault applies to (default 1; Infinity for all). */
  times?: number;
  /**
   * Wait this long: before moto sees the request ("before"), or after moto did the work and before the answer leaves
   * ("after": the answer is on its way). With nothing else set, the request then goes through normally.
   */
  delayMs?: number;
  /** An EC2 error: code (and message, status; default HTTP 400). */
  code?: string;
  message?: string;
  status?: number;
  /** A 200 answer with this body instead. */
  body?: string;
  /** Close the connection without an answer (a lost answer). */
  drop?: boolean;
}

export interface MotoRequest {
  action: string;
  params: URLSearchParams;
  status: number;
  /** The EC2 error code of the answer, if any. */
  code?: string;
  /** Answered by an injected fault. */
  injected: boolean;
  /** A RunInstances answered from the ClientToken memory (no second instance). */
  replayed: boolean;
}

export interface MotoOptions {
  /** First three octets of the loopback addresses handed out, e.g. "127.0.81." */
  ipv4Prefix: string;
  amis?: MotoAmi[];
  /** Start a stand-in sshd per instance (default true). */
  standins?: boolean;
  bootDelayMs?: number;
}

/** The Python that can import moto: SPUFF_MOTO_PYTHON, /usr/bin/python3 (test/setup.d/40-moto.sh), or python3 on PATH. */
export function motoPython(): string | undefined {
  const candidates = [process.env.SPUFF_MOTO_PYTHON, "/usr/bin/python3", "python3"].filter((c): c is string => Boolean(c));
  for (const py of candidates) {
    const r = spawnSync(py, ["-c", "import moto.server, moto.ec2"], { stdio: "ignore", timeout: 30_000 });
    if (r.status === 0) return py;
  }
  return undefined;
}

export const MOTO_SKIP_REASON = "moto is not importable (run test/setup.d/40-moto.sh, or set SPUFF_MOTO_PYTHON)";

/**
 * `python3 -m moto.server`, with one fix: moto 5.2 parses MOTO_AMIS_PATH's `creation_date` in place, so loading the
 * AMIs a second time (a second region, or POST /moto-api/reset) fails on the already parsed value. (moto 5.1, Debian's
 * python3-moto, keeps the string and needs no fix.)
 */
const MOTO_MAIN = [
  "import datetime, sys",
  "import moto.ec2.models.amis",
  "amis = sys.modules['moto.ec2.models.amis']",
  "_parse = getattr(amis, 'parse_timestamp', None)",
  "if _parse: amis.parse_timestamp = lambda v: v if isinstance(v, datetime.datetime) else _parse(v)",
  "from moto.server import main",
  "main(sys.argv[1:])",
].join("\n");

function xmlEscape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function ec2ErrorXml(code: string, message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message></Error></Errors><RequestID>${randomUUID()}</RequestID></Response>`;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/**
 * Rewrites each direct `<item>` child of every `<setTag>` element in `xml` (items nest: depth is counted), e.g. the
 * instances of each reservation's `instancesSet`.
 */
function mapItems(xml: string, setTag: string, fn: (item: string) => string): string {
  let out = "";
  let from = 0;
  const open = `<${setTag}>`;
  for (let at = xml.indexOf(open); at >= 0; at = xml.indexOf(open, from)) {
    const tokens = new RegExp(`<item>|</item>|</${setTag}>`, "g");
    tokens.lastIndex = at + open.length;
    out += xml.slice(from, tokens.lastIndex);
    from = tokens.lastIndex;
    let depth = 0;
    let start = -1;
    for (let m = tokens.exec(xml); m; m = tokens.exec(xml)) {
      if (m[0] === "<item>") {
        if (depth++ === 0) start = m.index;
      } else if (m[0] === "</item>") {
        if (--depth === 0) {
          out += xml.slice(from, start) + fn(xml.slice(start, tokens.lastIndex));
          from = tokens.lastIndex;
        }
      } else if (depth === 0) {
        break;
      }
    }
  }
  return out + xml.slice(from);
}

const ipv4ToInt = (ip: string) => ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
const intToIpv4 = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** User-data as cloud-init sees it: base64 undone, gzip undone. */
function decodeUserData(b64: string | null): string | undefined {
  if (!b64) return undefined;
  const bytes = Buffer.from(b64, "base64");
  return (bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes).toString("utf8");
}

export class Moto {
  readonly events = new EventEmitter();
  readonly requests: MotoRequest[] = [];
  /** Problems of the fake itself (moto's answer did not look as expected, a stand-in failed): tests assert none. */
  readonly problems: string[] = [];
  /** Stand-in sshds by instance id. */
  readonly standins = new Map<string, StandinVm>();
  /** Instance id → the loopback address it got. */
  readonly addresses = new Map<string, string>();
  bootDelayMs: number;
  /** Start a stand-in sshd per instance (from MotoOptions.standins; back to it on reset). */
  standinsEnabled: boolean;
  private faults: (MotoFault & { left: number })[] = [];
  private readonly ipMap = new Map<string, string>();
  private nextHost = 2;
  private readonly launchedAt = new Map<string, number>();
  private readonly tokens = new Map<string, Buffer>();
  /** Subnets EC2 would report IPv6-only (seen so in moto's answers, or made so by the proxy for moto 5.1). */
  private readonly ipv6OnlySubnets = new Set<string>();
  /** The IPv6-only subnets moto itself does not know as such (moto 5.1): their answers are rewritten. */
  private readonly emulatedIpv6Subnets = new Set<string>();
  /** Instances that get an IPv6 address (IPV6_LOOPBACK). */
  private readonly ipv6Instances = new Set<string>();
  private readonly sockets = new Set<Socket>();
  private pending = new Set<Promise<unknown>>();

  private constructor(
    private readonly opts: MotoOptions,
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly motoPort: number,
    private readonly server: Server,
    readonly proxyPort: number,
    private readonly log: () => string,
  ) {
    this.bootDelayMs = opts.bootDelayMs ?? 0;
    this.standinsEnabled = opts.standins ?? true;
  }

  /** Where spuff talks to (the proxy). */
  get endpoint(): string {
    return `http://127.0.0.1:${this.proxyPort}`;
  }

  /** moto itself, for tests that read state back without going through the proxy. */
  get motoEndpoint(): string {
    return `http://127.0.0.1:${this.motoPort}`;
  }

  static async start(opts: MotoOptions): Promise<Moto> {
    const python = motoPython();
    if (!python) throw new Error(MOTO_SKIP_REASON);
    const dir = mkdtempSync(join(tmpdir(), "spuff-moto-"));
    const amis = (opts.amis ?? DEFAULT_AMIS).map((a) => ({
      description: a.description ?? a.name,
      public: true,
      virtualization_type: "hvm",
      state: "available",
      image_type: "machine",
      hypervisor: "xen",
      root_device_name: a.root_device_name ?? "/dev/xvda",
      root_device_type: "ebs",
      sriov: "simple",
      ...a,
    }));
    writeFileSync(join(dir, "amis.json"), JSON.stringify(amis));
    const motoPort = await freePort();
    const child = spawn(python, ["-c", MOTO_MAIN, "-H", "127.0.0.1", "-p", String(motoPort)], {
      env: { ...process.env, MOTO_AMIS_PATH: join(dir, "amis.json"), PYTHONUNBUFFERED: "1", AWS_ACCESS_KEY_ID: "testing", AWS_SECRET_ACCESS_KEY: "testing" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    child.stdout?.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
    child.stderr?.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
    const exited = new Promise<never>((_, reject) => child.once("exit", (code) => reject(new Error(`moto exited (${code}): ${log.slice(-2000)}`))));
    exited.catch(() => {});
    try {
      await Promise.race([waitForPort("127.0.0.1", motoPort, 60_000), exited]);
    } catch (err) {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    let moto: Moto | undefined;
    const server = createServer((req, res) => {
      if (!moto) return res.destroy();
      const p = moto.handle(req, res).catch((err) => {
        moto?.problems.push(`proxy: ${(err as Error).stack ?? err}`);
        if (!res.headersSent) res.writeHead(500).end(ec2ErrorXml("InternalError", String(err)));
      });
      moto.pending.add(p);
      p.finally(() => moto?.pending.delete(p));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    const proxyPort = typeof addr === "object" && addr ? addr.port : 0;
    moto = new Moto(opts, child, dir, motoPort, server, proxyPort, () => log);
    server.on("connection", (s) => {
      moto?.sockets.add(s);
      s.once("close", () => moto?.sockets.delete(s));
    });
    return moto;
  }

  inject(fault: MotoFault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 });
  }

  clearFaults(): void {
    this.faults = [];
  }

  count(action: string): number {
    return this.requests.filter((r) => r.action === action).length;
  }

  /** Waits until every request the proxy is handling (and every stand-in start/stop) has finished. */
  async settled(): Promise<void> {
    while (this.pending.size) await Promise.allSettled([...this.pending]);
  }

  /** Forgets everything: moto's state (POST /moto-api/reset), faults, requests, stand-ins, ClientTokens. */
  async reset(): Promise<void> {
    await this.settled();
    await this.stopStandins();
    this.faults = [];
    this.requests.length = 0;
    this.problems.length = 0;
    this.ipMap.clear();
    this.addresses.clear();
    this.launchedAt.clear();
    this.tokens.clear();
    this.ipv6OnlySubnets.clear();
    this.emulatedIpv6Subnets.clear();
    this.ipv6Instances.clear();
    this.nextHost = 2;
    this.bootDelayMs = this.opts.bootDelayMs ?? 0;
    this.standinsEnabled = this.opts.standins ?? true;
    await new Promise<void>((resolve, reject) => {
      const r = request({ host: "127.0.0.1", port: this.motoPort, method: "POST", path: "/moto-api/reset" }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`moto reset: HTTP ${res.statusCode}`))));
      });
      r.on("error", reject);
      r.end();
    });
  }

  private async stopStandins(): Promise<void> {
    for (const [id, s] of this.standins) {
      this.standins.delete(id);
      await s.stop();
    }
  }

  async close(): Promise<void> {
    await this.settled().catch(() => {});
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    await this.stopStandins();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGTERM");
      const t = setTimeout(() => this.child.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** moto's output, for failure messages. */
  motoLog(): string {
    return this.log();
  }

  private takeFault(action: string, params: URLSearchParams): MotoFault | undefined {
    const f = this.faults.find((x) => x.left > 0 && x.action === action && (!x.match || x.match(params)));
    if (f) f.left--;
    return f;
  }

  private forward(req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const headers = { ...req.headers, host: `127.0.0.1:${this.motoPort}`, "content-length": String(body.length) };
      delete headers["accept-encoding"];
      const r = request({ host: "127.0.0.1", port: this.motoPort, method: req.method, path: req.url, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const out: Record<string, string> = {};
          const ct = res.headers["content-type"];
          if (ct) out["content-type"] = ct;
          resolve({ status: res.statusCode ?? 500, headers: out, body: Buffer.concat(chunks) });
        });
        res.on("error", reject);
      });
      r.on("error", reject);
      r.end(body);
    });
  }

  private loopbackFor(publicIp: string): string {
    let ip = this.ipMap.get(publicIp);
    if (!ip) {
      if (this.nextHost > 254) throw new Error("the fake ran out of loopback addresses");
      ip = `${this.opts.ipv4Prefix}${this.nextHost++}`;
      this.ipMap.set(publicIp, ip);
    }
    return ip;
  }

  /** Rewrites moto's public IPs (and the DNS names made from them) to loopback addresses; returns instance id → address. */
  private rewriteAddresses(xml: string): { xml: string; found: Map<string, string> } {
    const found = new Map<string, string>();
    // Each instance item ends with <ipAddress> after its <instanceId>; the interface items carry <publicIp>.
    const ips = new Set<string>();
    for (const m of xml.matchAll(/<(?:ipAddress|publicIp)>(\d+\.\d+\.\d+\.\d+)<\/(?:ipAddress|publicIp)>/g)) ips.add(m[1]);
    let out = xml;
    for (const ip of ips) {
      const lo = this.loopbackFor(ip);
      out = out.split(`>${ip}<`).join(`>${lo}<`).split(ip.replaceAll(".", "-")).join(lo.replaceAll(".", "-"));
    }
    for (const m of out.matchAll(/<instanceId>(i-[0-9a-f]+)<\/instanceId>(?:(?!<instanceId>)[\s\S])*?<ipAddress>([\d.]+)<\/ipAddress>/g)) found.set(m[1], m[2]);
    return { xml: out, found };
  }

  /**
   * moto 5.1 refused an IPv6-only CreateSubnet (no IPv4 block given): make the subnet in moto with a placeholder IPv4
   * /28 from the top of the VPC's block (the highest one no other subnet uses) and remember to report it IPv6-only.
   */
  private async createIpv6OnlySubnet(req: IncomingMessage, params: URLSearchParams): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
    const xmlAnswer = (status: number, body: string) => ({ status, headers: { "content-type": "text/xml" }, body: Buffer.from(body) });
    if (!params.get("Ipv6CidrBlock")) return xmlAnswer(400, ec2ErrorXml("MissingParameter", "Either 'ipv6CidrBlock' or 'ipv6IpamPoolId' should be provided."));
    const describe = new URLSearchParams({ Action: "DescribeVpcs", Version: params.get("Version") ?? "2016-11-15", "VpcId.1": params.get("VpcId") ?? "" });
    const vpcs = await this.forward(req, Buffer.from(describe.toString()));
    if (vpcs.status !== 200) return vpcs;
    const block = /<cidrBlock>(\d+\.\d+\.\d+\.\d+)\/(\d+)<\/cidrBlock>/.exec(vpcs.body.toString("utf8"));
    if (!block) throw new Error(`moto 5.1 IPv6-only subnet: no IPv4 block in DescribeVpcs' answer: ${vpcs.body.toString("utf8").slice(0, 500)}`);
    const size = 2 ** (32 - Number(block[2]));
    for (let n = 1; n * 16 <= size && n <= 256; n++) {
      const body = new URLSearchParams(params);
      body.delete("Ipv6Native");
      body.set("CidrBlock", `${intToIpv4(ipv4ToInt(block[1]) + size - n * 16)}/28`);
      const made = await this.forward(req, Buffer.from(body.toString()));
      const text = made.body.toString("utf8");
      if (made.status === 400 && text.includes("<Code>InvalidSubnet.Conflict</Code>")) continue;
      const id = /<subnetId>(subnet-[0-9a-f]+)<\/subnetId>/.exec(text)?.[1];
      if (made.status === 200 && id) this.emulatedIpv6Subnets.add(id);
      return made;
    }
    return xmlAnswer(400, ec2ErrorXml("InvalidSubnet.Conflict", "the test proxy found no free placeholder IPv4 /28 in the VPC"));
  }

  /** Subnet answers: the proxy's IPv6-only subnets reported as EC2 does; IPv6-only subnets noted. */
  private ipv6Subnets(xml: string): string {
    const each = (subnet: string) => {
      const id = /<subnetId>(subnet-[0-9a-f]+)<\/subnetId>/.exec(subnet)?.[1] ?? "";
      let out = subnet;
      if (this.emulatedIpv6Subnets.has(id)) {
        out = out
          .replace(/<ipv6Native>false<\/ipv6Native>/, "<ipv6Native>true</ipv6Native>")
          .replace(/<assignIpv6AddressOnCreation>false<\/assignIpv6AddressOnCreation>/, "<assignIpv6AddressOnCreation>true</assignIpv6AddressOnCreation>")
          .replace(/<cidrBlock>[^<]*<\/cidrBlock>/, "");
      }
      if (/<ipv6Native>true<\/ipv6Native>/.test(out)) this.ipv6OnlySubnets.add(id);
      return out;
    };
    const single = /<subnet>[\s\S]*<\/subnet>/.exec(xml);
    if (single) return xml.replace(single[0], () => each(single[0]));
    return mapItems(xml, "subnetSet", each);
  }

  /**
   * Instance answers: each instance that asked for IPv6 (ipv6Instances) has IPV6_LOOPBACK as its `ipv6Address` and as
   * the one address of its primary interface's `ipv6AddressesSet` (moto's own, if any, replaced), unless terminated.
   */
  private ipv6Addresses(xml: string): string {
    if (!this.ipv6Instances.size) return xml;
    return mapItems(xml, "instancesSet", (item) => {
      const id = /<instanceId>(i-[0-9a-f]+)<\/instanceId>/.exec(item)?.[1] ?? "";
      if (!this.ipv6Instances.has(id) || /<instanceState><code>\d+<\/code><name>terminated<\/name>/.test(item)) return item;
      const set = `<ipv6AddressesSet><item><ipv6Address>${IPV6_LOOPBACK}</ipv6Address><isPrimaryIpv6>false</isPrimaryIpv6></item></ipv6AddressesSet>`;
      const withNic = mapItems(item.replace(/^<item>/, ""), "networkInterfaceSet", (nic) => {
        if (!/<deviceIndex>0<\/deviceIndex>/.test(nic)) return nic;
        return `<item>${set}${nic.slice("<item>".length).replace(/<ipv6AddressesSet\/>|<ipv6AddressesSet>[\s\S]*?<\/ipv6AddressesSet>/, "")}`;
      });
      // The instance's own <ipv6Address> (the interface's ones are inside ipv6AddressesSet, already replaced).
      const own = withNic.replace(/<ipv6AddressesSet>[\s\S]*?<\/ipv6AddressesSet>/g, "").match(/<ipv6Address>[^<]*<\/ipv6Address>/);
      return `<item><ipv6Address>${IPV6_LOOPBACK}</ipv6Address>${own ? withNic.replace(own[0], "") : withNic}`;
    });
  }

  /** Instances younger than bootDelayMs report `pending`. */
  private gateBoot(xml: string): string {
    if (!this.bootDelayMs) return xml;
    const now = Date.now();
    let seen = 0;
    const out = xml.replace(
      /(<instanceId>(i-[0-9a-f]+)<\/instanceId>(?:<imageId>[^<]*<\/imageId>)?)<instanceState><code>16<\/code><name>running<\/name><\/instanceState>/g,
      (all, head: string, id: string) => {
        seen++;
        const at = this.launchedAt.get(id);
        return at !== undefined && now - at < this.bootDelayMs ? `${head}<instanceState><code>0</code><name>pending</name></instanceState>` : all;
      },
    );
    if (!seen && /<name>running<\/name>/.test(xml)) this.problems.push("boot gate: moto's DescribeInstances answer no longer matches the pattern");
    return out;
  }

  /** CreateImage with snapshot tags, which moto lacks (see the class comment). */
  private async createImage(req: IncomingMessage, params: URLSearchParams): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
    const specs = new Map<number, { type: string; tags: Map<number, { key?: string; value?: string }> }>();
    const rest = new URLSearchParams();
    for (const [k, v] of params) {
      const m = /^TagSpecification\.(\d+)\.(ResourceType|Tag\.(\d+)\.(Key|Value))$/.exec(k);
      if (!m) {
        rest.append(k, v);
        continue;
      }
      const spec = specs.get(Number(m[1])) ?? { type: "", tags: new Map() };
      specs.set(Number(m[1]), spec);
      if (m[2] === "ResourceType") spec.type = v;
      else {
        const t = spec.tags.get(Number(m[3])) ?? {};
        spec.tags.set(Number(m[3]), t);
        if (m[4] === "Key") t.key = v;
        else t.value = v;
      }
    }
    let n = 0;
    const snapshotTags: { key?: string; value?: string }[] = [];
    for (const [, spec] of [...specs].sort((a, b) => a[0] - b[0])) {
      if (spec.type === "snapshot") {
        snapshotTags.push(...spec.tags.values());
        continue;
      }
      n++;
      rest.set(`TagSpecification.${n}.ResourceType`, spec.type);
      let i = 0;
      for (const t of spec.tags.values()) {
        i++;
        rest.set(`TagSpecification.${n}.Tag.${i}.Key`, t.key ?? "");
        rest.set(`TagSpecification.${n}.Tag.${i}.Value`, t.value ?? "");
      }
    }
    const made = await this.forward(req, Buffer.from(rest.toString()));
    const id = /<imageId>(ami-[0-9a-f]+)<\/imageId>/.exec(made.body.toString("utf8"))?.[1];
    if (made.status !== 200 || !id) return made;
    const version = params.get("Version") ?? "2016-11-15";
    const described = await this.forward(req, Buffer.from(new URLSearchParams({ Action: "DescribeImages", Version: version, "ImageId.1": id }).toString()));
    const snapshots = [...described.body.toString("utf8").matchAll(/<snapshotId>(snap-[0-9a-f]+)<\/snapshotId>/g)].map((m) => m[1]);
    if (snapshotTags.length && snapshots.length) {
      const tag = new URLSearchParams({ Action: "CreateTags", Version: version });
      for (const [i, snap] of snapshots.entries()) tag.set(`ResourceId.${i + 1}`, snap);
      snapshotTags.forEach((t, i) => {
        tag.set(`Tag.${i + 1}.Key`, t.key ?? "");
        tag.set(`Tag.${i + 1}.Value`, t.value ?? "");
      });
      const tagged = await this.forward(req, Buffer.from(tag.toString()));
      if (tagged.status !== 200) this.problems.push(`tagging the snapshots of ${id}: ${tagged.body.toString("utf8").slice(0, 300)}`);
    }
    this.events.emit("image-created", { id, snapshots });
    return made;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req);
    const url = new URL(req.url ?? "/", "http://x");
    const params = new URLSearchParams(raw.toString("utf8"));
    for (const [k, v] of url.searchParams) if (!params.has(k)) params.set(k, v);
    const action = params.get("Action") ?? "";
    const record: MotoRequest = { action, params, status: 0, injected: false, replayed: false };
    this.requests.push(record);
    this.events.emit("received", record);
    const send = (status: number, body: string | Buffer, contentType = "text/xml") => {
      record.status = status;
      const code = status >= 400 ? /<Code>([^<]+)<\/Code>/.exec(body.toString())?.[1] : undefined;
      if (code) record.code = code;
      res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
      res.end(body);
      this.events.emit("request", record);
    };
    const drop = () => {
      record.status = -1;
      req.socket.destroy();
      this.events.emit("request", record);
    };
    const answerFault = (f: MotoFault) => {
      record.injected = true;
      if (f.drop) return drop();
      if (f.code) return send(f.status ?? 400, ec2ErrorXml(f.code, f.message ?? `${f.code} (injected by the test proxy)`));
      if (f.body !== undefined) return send(200, f.body);
    };

    const fault = this.takeFault(action, params);
    const after = fault?.when === "after";
    if (fault?.delayMs && !after) await sleep(fault.delayMs);
    if (fault && (fault.when ?? "before") === "before" && (fault.drop || fault.code || fault.body !== undefined)) return answerFault(fault);

    // EC2's ClientToken idempotency, which moto lacks.
    const token = action === "RunInstances" ? params.get("ClientToken") : null;
    const remembered = token ? this.tokens.get(token) : undefined;
    let upstream: { status: number; headers: Record<string, string>; body: Buffer };
    if (remembered) {
      record.replayed = true;
      upstream = { status: 200, headers: { "content-type": "text/xml" }, body: remembered };
    } else if (action === "CreateImage") {
      upstream = await this.createImage(req, params);
    } else {
      upstream = await this.forward(req, raw);
    }
    // moto 5.1 cannot make an IPv6-only subnet (it insists on an IPv4 block): the proxy makes one (see above).
    if (
      action === "CreateSubnet" &&
      upstream.status === 400 &&
      params.get("Ipv6Native")?.toLowerCase() === "true" &&
      !params.get("CidrBlock") &&
      /parameter cidrBlock is invalid/.test(upstream.body.toString("utf8"))
    ) {
      upstream = await this.createIpv6OnlySubnet(req, params);
    }

    let text = upstream.body.toString("utf8");
    // moto 5.2 renders a subnet's IPv6 block state as a Python dict ("{'State': 'associated'}"); EC2 says "associated".
    if (action === "DescribeSubnets" || action === "CreateSubnet") text = text.replace(/<state>\{'State': '(\w+)'\}<\/state>/g, "<state>$1</state>");
    if (upstream.status === 200 && (action === "DescribeSubnets" || action === "CreateSubnet")) text = this.ipv6Subnets(text);
    if (upstream.status === 200 && (action === "RunInstances" || action === "DescribeInstances")) {
      if (action === "RunInstances" && !remembered) {
        if (token) this.tokens.set(token, upstream.body);
        const ids = [...text.matchAll(/<instanceId>(i-[0-9a-f]+)<\/instanceId>/g)].map((m) => m[1]);
        for (const id of ids) this.launchedAt.set(id, Date.now());
        // EC2 gives an IPv6 address for Ipv6AddressCount, and always in an IPv6-only subnet.
        const count = Number(params.get("NetworkInterface.1.Ipv6AddressCount") ?? params.get("Ipv6AddressCount") ?? 0);
        const subnet = params.get("NetworkInterface.1.SubnetId") ?? params.get("SubnetId") ?? "";
        if (count > 0 || this.ipv6OnlySubnets.has(subnet)) for (const id of ids) this.ipv6Instances.add(id);
      }
      const { xml, found } = this.rewriteAddresses(text);
      text = this.ipv6Addresses(action === "DescribeInstances" ? this.gateBoot(xml) : xml);
      for (const [id, ip] of found) this.addresses.set(id, ip);
      if (action === "RunInstances" && !remembered) {
        // Without a public IPv4, spuff connects to the IPv6 address: the stand-in listens there.
        const launched = new Map(found);
        for (const m of text.matchAll(/<instanceId>(i-[0-9a-f]+)<\/instanceId>/g)) {
          if (!launched.has(m[1]) && this.ipv6Instances.has(m[1])) launched.set(m[1], IPV6_LOOPBACK);
        }
        for (const [id, ip] of launched) {
          this.addresses.set(id, ip);
          this.events.emit("instance-launched", { id, ip });
          const userData = decodeUserData(params.get("UserData"));
          if (this.standinsEnabled && userData?.startsWith("#cloud-config")) {
            try {
              this.standins.set(id, await startStandinVm(userData, ip));
            } catch (err) {
              this.problems.push(`stand-in for ${id} on ${ip}: ${(err as Error).message}`);
            }
          }
        }
      }
    }
    if (upstream.status === 200 && action === "TerminateInstances") {
      for (const [k, id] of params) {
        if (!/^InstanceId\.\d+$/.test(k)) continue;
        const s = this.standins.get(id);
        this.standins.delete(id);
        await s?.stop();
        this.events.emit("instance-terminated", { id });
      }
    }
    if (after && fault?.delayMs) await sleep(fault.delayMs);
    if (after && fault && (fault.drop || fault.code || fault.body !== undefined)) return answerFault(fault);
    send(upstream.status, text, upstream.headers["content-type"] ?? "text/xml");
  }
}
