import {
  DeleteInternetGatewayCommand,
  DeleteSubnetCommand,
  DeleteVpcCommand,
  DescribeInternetGatewaysCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  DetachInternetGatewayCommand,
  EC2Client,
} from "@aws-sdk/client-ec2";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { freePort } from "../../helpers/sshd.js";
import { SKIP, useHarness } from "./harness.js";

const SECRET = "spuff-test-secret-not-a-real-one";

// Every error the AWS provider maps, seen through the real CLI: the message, the hint and the exit code (1: the user
// fixes it — credentials, permissions, config; 2: EC2 failed or refused — capacity, quotas, outages). Errors come from
// moto itself where it produces them (unknown AMI, unknown instance type, a region without default VPC) and otherwise
// from the proxy answering the chosen Action with EC2's XML error. No stack trace without --verbose; failed `up`s
// leave nothing. Addresses 127.0.85.N.
describe.skipIf(SKIP)(`aws: errors through the CLI${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.85." });

  /** Error output without a stack trace and without the secret key. */
  function clean(r: { stdout: string; stderr: string }): void {
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  }

  async function nothingLeft(): Promise<void> {
    await h.moto.settled();
    expect(await h.live()).toEqual([]);
    expect(await h.spuffGroups()).toEqual([]);
  }

  /** `up` lists spuff's instances alongside (leftovers that need reaping are named at the end); the rest of its requests. */
  /** `up` lists spuff's instances alongside (to name leftovers that need reaping); every other request it made. */
  const requestsBesidesLeftoverCheck = () =>
    h.moto.requests
      .filter(
        (q) =>
          !(q.action === "DescribeInstances" && q.params.get("Filter.1.Name") === "tag:managed-by" && q.params.get("Filter.2.Name") === "instance-state-name" && !q.params.has("Filter.3.Name")),
      )
      .map((q) => q.action);

  const created = () => h.moto.count("CreateSecurityGroup") + h.moto.count("RunInstances");

  it("no credentials anywhere: exit 1, points to `aws configure` and AWS_PROFILE; nothing is sent", async () => {
    const r = await h.spuff(["up", "nocreds"], { AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "" });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("error: no AWS credentials found");
    expect(r.stderr).toMatch(/hint: configure credentials the way the AWS CLI reads them: `aws configure`/);
    expect(r.stderr).toMatch(/hint: pick a profile with aws\.profile in your spuff config or AWS_PROFILE/);
    clean(r);
    expect(h.moto.requests).toEqual([]);
  });

  it("a profile that does not exist: exit 1, names the profile", async () => {
    const r = await h.spuff(["ls"], { AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "", AWS_PROFILE: "nosuchprofile" });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('error: the AWS profile "nosuchprofile" has no usable credentials');
    expect(r.stderr).toContain("hint: check ~/.aws/config and ~/.aws/credentials for [profile nosuchprofile]");
    expect(r.stderr).toContain("hint: or set aws.profile / AWS_PROFILE to a profile that exists");
    expect(h.moto.requests).toEqual([]);

    // A profile that exists (with its region) but holds no credentials: the same message, and the region came from it.
    mkdirSync(join(h.home.home, ".aws"), { recursive: true });
    writeFileSync(join(h.home.home, ".aws", "config"), "[profile empty]\nregion = eu-west-1\n");
    const empty = await h.spuff(["ls"], { AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "", AWS_REGION: undefined, AWS_PROFILE: "empty" });
    expect(empty.code, empty.stderr).toBe(1);
    expect(empty.stderr).toContain('error: the AWS profile "empty" has no usable credentials');
    expect(h.moto.requests).toEqual([]);
  });

  it("no region: exit 1, says where to set one", async () => {
    for (const env of [{ AWS_REGION: undefined }, { AWS_REGION: "" }]) {
      const r = await h.spuff(["ls"], env);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain("error: no AWS region is configured");
      expect(r.stderr).toContain("hint: set aws.region in your spuff config, or export AWS_REGION");
    }
    h.writeConfig({ aws: { region: "Not A Region" } });
    const bad = await h.spuff(["ls"], { AWS_REGION: undefined });
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stderr).toContain('error: "Not A Region" is not an AWS region');
  });

  for (const [code, message] of [
    ["RequestExpired", "Request has expired."],
    ["ExpiredToken", "The security token included in the request is expired"],
  ]) {
    it(`expired session credentials (${code}): exit 1, says to refresh them`, async () => {
      h.moto.inject({ action: "DescribeInstances", code, message, times: Number.POSITIVE_INFINITY });
      const r = await h.spuff(["ls"], { AWS_SESSION_TOKEN: "FwoGZXIvYXdzEXAMPLESESSIONTOKEN" });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`error: the AWS credentials have expired (${code}: ${message})`);
      expect(r.stderr).toContain("hint: refresh them: `aws sso login` (SSO), or export a new AWS_SESSION_TOKEN with its keys");
      expect(r.stderr).toContain("hint: if they are fresh, check this machine's clock");
      expect(r.stderr).not.toContain("FwoGZXIvYXdzEXAMPLESESSIONTOKEN");
      clean(r);
    });
  }

  it("keys EC2 does not know (AuthFailure): exit 1", async () => {
    h.moto.inject({ action: "DescribeInstances", code: "AuthFailure", message: "AWS was not able to validate the provided access credentials", status: 401, times: Number.POSITIVE_INFINITY });
    const r = await h.spuff(["ls"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("error: AWS rejected the credentials (AuthFailure: AWS was not able to validate the provided access credentials)");
    expect(r.stderr).toContain("hint: configure credentials the way the AWS CLI reads them");
    clean(r);
  });

  it("UnauthorizedOperation on RunInstances: exit 1, names the missing action; the security group is rolled back", async () => {
    h.moto.inject({
      action: "RunInstances",
      code: "UnauthorizedOperation",
      status: 403,
      message: "You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ec2:RunInstances. Encoded authorization failure message: Zm9vYmFyYmF6cXV4",
    });
    const r = await h.spuff(["up", "denied"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("error: your AWS identity is not allowed to call ec2:RunInstances in us-east-1 (UnauthorizedOperation: You are not authorized");
    expect(r.stderr).toContain("(encoded authorization message omitted)");
    expect(r.stderr).not.toContain("Zm9vYmFyYmF6cXV4");
    expect(r.stderr).toContain('hint: add "ec2:RunInstances" to the IAM policy of your user or role; docs/providers/aws.md lists the minimal policy');
    expect(r.stderr).toContain("hint: `aws sts decode-authorization-message --encoded-message ...` explains a denial in detail");
    expect(h.moto.count("RunInstances")).toBe(1);
    clean(r);
    await nothingLeft();
  });

  it("UnauthorizedOperation on a read (ls) and on the waiter's DescribeInstances: the action is named", async () => {
    h.moto.inject({ action: "DescribeSecurityGroups", code: "UnauthorizedOperation", status: 403, message: "You are not authorized to perform this operation." });
    const sg = await h.spuff(["up", "nosg"]);
    expect(sg.code, sg.stderr).toBe(1);
    expect(sg.stderr).toContain("error: your AWS identity is not allowed to call ec2:DescribeSecurityGroups in us-east-1");
    await nothingLeft();

    // The waiter stops at the first error that is not "not found yet" instead of retrying until it times out.
    h.moto.bootDelayMs = 60_000;
    let polls = 0;
    h.moto.inject({
      action: "DescribeInstances",
      match: (p) => p.has("InstanceId.1") && ++polls >= 2,
      code: "UnauthorizedOperation",
      status: 403,
      message: "You are not authorized to perform this operation.",
    });
    const wait = await h.spuff(["up", "nowait"]);
    expect(wait.code, wait.stderr).toBe(1);
    expect(wait.stderr).toContain("error: your AWS identity is not allowed to call ec2:DescribeInstances in us-east-1");
    h.moto.bootDelayMs = 0;
    await nothingLeft();
  });

  it("InsufficientInstanceCapacity: exit 2, not retried, names other zones; nothing is left", async () => {
    h.moto.inject({
      action: "RunInstances",
      code: "InsufficientInstanceCapacity",
      status: 500,
      message: "We currently do not have sufficient t3.small capacity in the Availability Zone you requested (us-east-1a).",
    });
    const r = await h.spuff(["up", "full"]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("error: AWS has no capacity for t3.small in us-east-1a right now (InsufficientInstanceCapacity: We currently do not have sufficient");
    expect(r.stderr).toMatch(/hint: try another availability zone: --location us-east-1b \(t3\.small is offered in us-east-1b, us-east-1c/);
    expect(r.stderr).toContain("hint: or another instance type with --size, or again in a few minutes");
    expect(h.moto.count("RunInstances")).toBe(1);
    clean(r);
    await nothingLeft();
  });

  it("spot without capacity mentions on-demand", async () => {
    h.writeConfig({ aws: { spot: true } });
    h.moto.inject({ action: "RunInstances", code: "InsufficientInstanceCapacity", status: 500, message: "There is no Spot capacity available that matches your request." });
    const r = await h.spuff(["up", "nospot"]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("error: AWS has no spot capacity for t3.small in us-east-1a right now");
    expect(r.stderr).toContain("or on-demand (aws.spot: false)");
    await nothingLeft();
  });

  it("VcpuLimitExceeded: exit 2, points to the quota", async () => {
    h.moto.inject({
      action: "RunInstances",
      code: "VcpuLimitExceeded",
      message: "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket that the specified instance type belongs to.",
    });
    const r = await h.spuff(["up", "quota"]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("error: your AWS account's vCPU quota in us-east-1 does not allow another t3.small (VcpuLimitExceeded: You have requested more vCPU capacity");
    expect(r.stderr).toContain("hint: terminate instances you no longer need (`spuff ls`), or pick a smaller type with --size");
    expect(r.stderr).toContain('Service Quotas → Amazon EC2 → "Running On-Demand Standard');
    clean(r);
    await nothingLeft();
  });

  it("an AMI that does not exist (aws.ami; moto's InvalidAMIID.NotFound): exit 1 before anything is created", async () => {
    h.writeConfig({ aws: { ami: "ami-0123456789abcdef0" } });
    const r = await h.spuff(["up", "noami"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("error: the AMI ami-0123456789abcdef0 cannot be used in us-east-1 (InvalidAMIID.NotFound:");
    expect(r.stderr).toContain("hint: AMIs are per region: look the image up in this region");
    expect(r.stderr).toContain("hint: or remove aws.ami to use the latest official Debian 13 image");
    expect(created()).toBe(0);
    clean(r);
  });

  it("an AMI that went away between lookup and launch (InvalidAMIID.Unavailable on RunInstances): exit 1", async () => {
    h.moto.inject({ action: "RunInstances", code: "InvalidAMIID.Unavailable", message: "The image id '[ami-0deb13a0000000002]' is no longer available" });
    const r = await h.spuff(["up", "goneami"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("error: the AMI ami-0deb13a0000000002 cannot be used in us-east-1 (InvalidAMIID.Unavailable:");
    await nothingLeft();
  });

  it("no official Debian 13 image in the region: exit 2, suggests aws.ami", async () => {
    h.moto.inject({
      action: "DescribeImages",
      body: '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>x</requestId><imagesSet/></DescribeImagesResponse>',
    });
    const r = await h.spuff(["up", "nodebian"]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("error: no official Debian 13 x86_64 AMI (owner 136693071363) found in us-east-1");
    expect(r.stderr).toContain("hint: set aws.ami to a Debian 13 AMI id in this region");
    expect(created()).toBe(0);
  });

  it("an unknown instance type (moto's InvalidInstanceType): exit 1 before anything is created", async () => {
    const r = await h.spuff(["up", "badtype", "--size", "t9.bogus"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('error: unknown EC2 instance type "t9.bogus" in us-east-1 (InvalidInstanceType:');
    expect(r.stderr).toContain("hint: pass an existing type with --size or aws.instance_type, e.g. t3.small");
    expect(created()).toBe(0);
    clean(r);
  });

  it("a region without a default VPC (deleted in moto): exit 1, suggests aws.subnet_id or create-default-vpc", async () => {
    const region = "eu-west-3";
    const ec2 = new EC2Client({ region, endpoint: h.moto.motoEndpoint, credentials: { accessKeyId: "AKIATEST", secretAccessKey: "x" } });
    try {
      const vpc = (await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: "is-default", Values: ["true"] }] }))).Vpcs?.[0].VpcId as string;
      for (const s of (await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: "vpc-id", Values: [vpc] }] }))).Subnets ?? []) {
        await ec2.send(new DeleteSubnetCommand({ SubnetId: s.SubnetId }));
      }
      for (const g of (await ec2.send(new DescribeInternetGatewaysCommand({ Filters: [{ Name: "attachment.vpc-id", Values: [vpc] }] }))).InternetGateways ?? []) {
        await ec2.send(new DetachInternetGatewayCommand({ InternetGatewayId: g.InternetGatewayId, VpcId: vpc }));
        await ec2.send(new DeleteInternetGatewayCommand({ InternetGatewayId: g.InternetGatewayId }));
      }
      await ec2.send(new DeleteVpcCommand({ VpcId: vpc }));
    } finally {
      ec2.destroy();
    }
    const r = await h.spuff(["up", "novpc"], { AWS_REGION: region });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("error: the region eu-west-3 has no default VPC");
    expect(r.stderr).toContain("hint: set aws.subnet_id to a public subnet");
    expect(r.stderr).toContain("hint: or create a default VPC: `aws ec2 create-default-vpc`");
    expect(created()).toBe(0);
  });

  it("a subnet (aws.subnet_id) that does not exist: exit 1", async () => {
    h.writeConfig({ aws: { subnet_id: "subnet-0123456789abcdef0" } });
    const r = await h.spuff(["up", "nosubnet"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/error: the subnet (in aws\.subnet_id|subnet-0123456789abcdef0 \(aws\.subnet_id\)) does not exist/);
    expect(created()).toBe(0);
  });

  it("an invalid aws.ssh_cidr: exit 1 before any request", async () => {
    h.writeConfig({ aws: { ssh_cidr: "203.0.113.7" } });
    const r = await h.spuff(["up", "cidr"]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('error: aws.ssh_cidr: "203.0.113.7" is not an IPv4 or IPv6 CIDR');
    expect(requestsBesidesLeftoverCheck()).toEqual([]);
  });

  it("the endpoint does not answer: exit 2, names the endpoint", async () => {
    const port = await freePort();
    const r = await h.spuff(["ls"], { AWS_ENDPOINT_URL_EC2: `http://127.0.0.1:${port}` });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`error: cannot reach the EC2 API at http://127.0.0.1:${port} (ECONNREFUSED`);
    expect(r.stderr).toContain("hint: check aws.endpoint / AWS_ENDPOINT_URL_EC2, or unset it to use AWS");
    clean(r);
  });

  it("EC2 keeps failing (InternalError): exit 2 after the SDK's retries; --verbose adds the stack", async () => {
    h.moto.inject({ action: "DescribeInstances", code: "InternalError", status: 500, message: "An internal error has occurred", times: Number.POSITIVE_INFINITY });
    const r = await h.spuff(["ls"]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("error: EC2 DescribeInstances failed in us-east-1: InternalError: An internal error has occurred (HTTP 500)");
    expect(h.moto.count("DescribeInstances")).toBe(4);
    clean(r);
    const v = await h.spuff(["ls", "--verbose"]);
    expect(v.code, v.stderr).toBe(2);
    expect(v.stderr).toMatch(/^\s+at /m);
    expect(v.stdout + v.stderr).not.toContain(SECRET);
  });
});
