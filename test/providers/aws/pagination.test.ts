import { describe, expect, it } from "vitest";
import { SKIP, useHarness } from "./harness.js";

/** A DescribeInstances page with no instances and the given NextToken (what a broken endpoint or proxy might send). */
const page = (token?: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>page-${token ?? "last"}</requestId><reservationSet/>${token ? `<nextToken>${token}</nextToken>` : ""}</DescribeInstancesResponse>`;

// Listing always ends: a NextToken EC2 already sent would make the SDK loop for ever. Real CLI, moto behind the proxy.
describe.skipIf(SKIP)(`aws: pagination always ends${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  const h = useHarness({ ipv4Prefix: "127.0.87.", standins: false });

  it("DescribeInstances answering every page with the same NextToken: ls ends with a clear error", async () => {
    h.moto.inject({ action: "DescribeInstances", body: page("same-token"), times: Infinity });
    const r = await h.spuff(["ls"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: DescribeInstances: EC2 answered page 2 with a NextToken it had sent before: the pages would repeat for ever");
    expect(r.stderr).toContain(`hint: the answers do not come from a working EC2 endpoint: check the endpoint ${h.moto.endpoint}`);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(h.moto.count("DescribeInstances")).toBe(2);
  });

  it("tokens that change: every page is read and the list is whole", async () => {
    for (const t of ["t1", "t2", undefined]) h.moto.inject({ action: "DescribeInstances", body: page(t) });
    const r = await h.spuff(["ls", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    const tokens = h.moto.requests.filter((q) => q.action === "DescribeInstances").map((q) => q.params.get("NextToken"));
    expect(tokens).toEqual([null, "t1", "t2"]);
  });
});
