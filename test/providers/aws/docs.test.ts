import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

// docs/providers/aws.md's IAM policy names exactly the EC2 actions the provider calls: every `new XCommand(` and every
// SDK waiter (they poll DescribeInstances) in providers/aws/.
describe("aws: the documented IAM policy", () => {
  it("lists every EC2 action the provider calls, and nothing else", () => {
    const dir = "providers/aws";
    const code = readdirSync(dir)
      .filter((f) => f.endsWith(".ts"))
      .map((f) => readFileSync(join(dir, f), "utf8"))
      .join("\n");
    const called = new Set([...code.matchAll(/new (\w+)Command\(/g)].map((m) => `ec2:${m[1]}`));
    if (/waitUntilInstance\w+\(|waiter\(/.test(code)) called.add("ec2:DescribeInstances");
    const doc = readFileSync("docs/providers/aws.md", "utf8");
    const json = /## Minimal IAM policy[\s\S]*?```json\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(json).toBeDefined();
    const policy = JSON.parse(json ?? "{}") as { Statement: { Action: string[] }[] };
    const documented = policy.Statement.flatMap((s) => s.Action);
    expect(new Set(documented).size).toBe(documented.length);
    expect([...documented].sort()).toEqual([...called].sort());
  });
});
