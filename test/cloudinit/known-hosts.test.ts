import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

// Recomputes every pinned git host key's fingerprint, with ssh-keygen (which also rejects malformed keys, e.g. an
// ECDSA point off its curve) and independently with node's SHA-256, and compares both with the documented value.
const known = readFileSync("cloud-init/known_hosts", "utf8")
  .split("\n")
  .filter((l) => l && !l.startsWith("#"));
const documented = [...readFileSync("cloud-init/FINGERPRINTS.md", "utf8").matchAll(/^\| (\S+) \| (\S+) \| `(SHA256:[^`]+)` \| (.+) \|$/gm)].map(
  ([, host, type, fp, source]) => ({ host, type, fp, source }),
);
const sshKeygenFp = (line: string) => execFileSync("ssh-keygen", ["-lf", "-"], { input: `${line}\n`, encoding: "utf8" }).split(" ")[1];
const sha256Fp = (base64: string) => `SHA256:${createHash("sha256").update(Buffer.from(base64, "base64")).digest("base64").replace(/=+$/, "")}`;

describe("pinned git host keys (cloud-init/known_hosts)", () => {
  it("has one documented fingerprint and source per pinned key, for the five built-in hosts", () => {
    expect(known).toHaveLength(15);
    expect(documented).toHaveLength(15);
    expect(new Set(documented.map((d) => d.host))).toEqual(new Set(["github.com", "gitlab.com", "bitbucket.org", "codeberg.org", "git.sr.ht"]));
    for (const d of documented) expect(d.source.trim().length, `${d.host} ${d.type} source`).toBeGreaterThan(3);
    const pairs = known.map((l) => l.split(" ").slice(0, 2).join(" "));
    expect(new Set(pairs).size).toBe(pairs.length);
  });

  for (const line of known) {
    const [host, type, base64, ...rest] = line.split(" ");
    it(`${host} ${type} matches its documented fingerprint`, () => {
      expect(rest).toEqual([]);
      // The key blob names its own type.
      const blob = Buffer.from(base64, "base64");
      expect(blob.subarray(4, 4 + blob.readUInt32BE(0)).toString()).toBe(type);
      const doc = documented.find((d) => d.host === host && d.type === type);
      expect(doc, `${host} ${type} is documented`).toBeDefined();
      expect(sshKeygenFp(`${type} ${base64}`)).toBe(doc?.fp);
      expect(sha256Fp(base64)).toBe(doc?.fp);
    });
  }

  it("does not pin the retired GitHub and Bitbucket RSA keys", () => {
    const fps = known.map((l) => sha256Fp(l.split(" ")[2]));
    expect(fps).not.toContain("SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8");
    expect(fps).not.toContain("SHA256:zzXQOXSRBEiUtuE8AikJYKwbHaxvSc0ojez9YXaGp1A");
  });

  it("a changed key is caught (the comparison is not vacuous)", () => {
    const [, , base64] = known[0].split(" ");
    const flipped = Buffer.from(base64, "base64");
    flipped[flipped.length - 1] ^= 1;
    expect(documented.map((d) => d.fp)).not.toContain(sha256Fp(flipped.toString("base64")));
  });
});
