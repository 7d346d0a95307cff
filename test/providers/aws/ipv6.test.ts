import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { AssociateVpcCidrBlockCommand, CreateSubnetCommand, CreateVpcCommand, EC2Client } from "@aws-sdk/client-ec2";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { events, REGION, SKIP, useHarness } from "./harness.js";

/** Whether a process exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// An IPv6-only subnet (Ipv6Native) through the built CLI: spuff launches without a public IPv4 and with one IPv6
// address, and connects over IPv6. The proxy (test/fakes/moto.ts) gives the instance the IPv6 loopback ::1, which moto
// lacks, and runs the stand-in sshd on [::1]:22; IPv4 stand-ins of this file would get 127.0.86.N (there are none).
describe.skipIf(SKIP)(`aws: IPv6-only subnet${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.86." });

  it("launches with no public IPv4 and one IPv6 address, reaches the pinned sshd on [::1]:22, records and lists that endpoint, and down removes it", async () => {
    // The VPC directly in moto; the subnet through the proxy, which makes it IPv6-only for moto 5.1 too.
    const vpc = (await h.ec2.send(new CreateVpcCommand({ CidrBlock: "10.6.0.0/16" }))).Vpc?.VpcId as string;
    const assoc = await h.ec2.send(new AssociateVpcCidrBlockCommand({ VpcId: vpc, AmazonProvidedIpv6CidrBlock: true }));
    const v6 = (assoc.Ipv6CidrBlockAssociation?.Ipv6CidrBlock ?? "").replace(/::\/56$/, "::/64");
    const viaProxy = new EC2Client({
      region: REGION,
      endpoint: h.moto.endpoint,
      credentials: { accessKeyId: "AKIASPUFFTESTKEY0001", secretAccessKey: "spuff-test-secret-not-a-real-one" },
    });
    let subnet: string;
    try {
      const created = (await viaProxy.send(new CreateSubnetCommand({ VpcId: vpc, Ipv6Native: true, Ipv6CidrBlock: v6, AvailabilityZone: "us-east-1b" }))).Subnet;
      expect(created).toMatchObject({ Ipv6Native: true, VpcId: vpc, AvailabilityZone: "us-east-1b" });
      expect(created?.CidrBlock).toBeUndefined();
      subnet = created?.SubnetId as string;
    } finally {
      viaProxy.destroy();
    }
    h.writeConfig({ aws: { subnet_id: subnet } });
    const up = await h.spuff(["up", "six", "--json"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toBe("");
    // Ready means spuff's SSH wait and cloud-init check went through [::1]:22 with the pinned host key.
    const ready = events(up.stdout).find((e) => e.event === "ready") as { vm: Record<string, unknown> };
    expect(ready.vm).toMatchObject({ name: "six", provider: "aws", status: "running", address: "[::1]:22", location: "us-east-1b" });

    // What spuff sent: the IPv6-only subnet, no public IPv4, one IPv6 address.
    const runs = h.moto.requests.filter((r) => r.action === "RunInstances");
    expect(runs).toHaveLength(1);
    const p = runs[0].params;
    expect(Object.fromEntries([...p].filter(([k]) => k.startsWith("NetworkInterface.1.") && !k.includes("SecurityGroupId")))).toEqual({
      "NetworkInterface.1.DeviceIndex": "0",
      "NetworkInterface.1.SubnetId": subnet,
      "NetworkInterface.1.AssociatePublicIpAddress": "false",
      "NetworkInterface.1.DeleteOnTermination": "true",
      "NetworkInterface.1.Ipv6AddressCount": "1",
    });
    // moto's instance (read directly): in that subnet, without a public IPv4.
    const [instance, ...more] = await h.live();
    expect(more).toEqual([]);
    expect(instance).toMatchObject({ SubnetId: subnet, VpcId: vpc });
    expect(instance.PublicIpAddress).toBeUndefined();
    const id = instance.InstanceId as string;
    expect(h.moto.addresses.get(id)).toBe("::1");
    const standin = h.moto.standins.get(id);
    expect(standin).toMatchObject({ host: "::1", port: 22 });

    // spuff reached the sshd on [::1]:22 with the key from user-data, replaced it (docs/adr/0008-host-key-rotation.md),
    // and pins the one that sshd serves now.
    const b64 = p.get("UserData") ?? "";
    const bytes = Buffer.from(b64, "base64");
    const userData = parse((bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes).toString("utf8")) as { ssh_keys: { ed25519_public: string } };
    const keyOf = (line: string) => line.trim().split(/\s+/).slice(0, 2).join(" ");
    const record = JSON.parse(readFileSync(join(h.home.home, ".local", "state", "spuff", "vms", "six", "vm.json"), "utf8"));
    expect(record).toMatchObject({ name: "six", provider: "aws", id, endpoint: { host: "::1", port: 22 } });
    expect(keyOf(record.hostKey)).not.toBe(keyOf(userData.ssh_keys.ed25519_public));
    const scan = spawnSync("ssh-keyscan", ["-T", "5", "-t", "ed25519", "-p", "22", "::1"], { encoding: "utf8" });
    expect(scan.stdout.trim().split(/\s+/).slice(1, 3).join(" ")).toBe(keyOf(record.hostKey));

    // ls and status report the IPv6 endpoint (docs/json.md: [v6]:port).
    const ls = await h.spuff(["ls", "--json"]);
    expect(ls.code, ls.stderr).toBe(0);
    const vms = JSON.parse(ls.stdout);
    expect(vms).toHaveLength(1);
    expect(vms[0]).toMatchObject({ name: "six", provider: "aws", id, status: "running", address: "[::1]:22", reap: null });
    const status = await h.spuff(["status", "six", "--json"]);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ name: "six", provider: "aws", id, status: "running", address: "[::1]:22" });

    const down = await h.spuff(["down", "six", "--yes"]);
    expect(down.code, down.stderr).toBe(0);
    expect(await h.live()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
    await h.moto.settled();
    // Its stand-in is stopped (the address may be taken by another test file's IPv6 stand-in right after).
    expect(h.moto.standins.size).toBe(0);
    expect(alive(standin?.pid ?? 0)).toBe(false);
    const after = await h.spuff(["ls", "--json"]);
    expect(JSON.parse(after.stdout)).toEqual([]);
  });
});
