import { readFileSync } from "node:fs";
import { join } from "node:path";
import { templateDir } from "../cloudinit/template-dir.js";
import { fingerprintOf } from "./connect.js";

/** A git host the guard signs logins for under `sign_policy: git-only`: its pinned host keys and its login user. */
export interface GitHostPin {
  /** The name the VM knows it by (`github.com`, a `git_hosts` entry's `host`); shown in the log. */
  name: string;
  /** The one user a login there may be for. */
  user: string;
  /** "SHA256:..." fingerprints of its pinned host keys. Empty: nothing is pinned, so nothing is signed for it. */
  fingerprints: string[];
}

/** A `git_hosts` entry of the config, as far as the guard needs it. */
export interface GitHostEntry {
  host: string;
  user?: string;
  host_keys?: string[];
  fingerprints?: string[];
}

/** The known_hosts file shipped to every VM (cloud-init/known_hosts, found as the templates are). */
function shippedKnownHosts(): string {
  return readFileSync(join(templateDir(), "known_hosts"), "utf8");
}

/** The fingerprint of a "TYPE BASE64" key (the blob is hashed as it is; no parsing needed). */
function lineFingerprint(typeAndKey: string): string | undefined {
  const b64 = typeAndKey.trim().split(/\s+/)[1];
  return b64 ? fingerprintOf(Buffer.from(b64, "base64")) : undefined;
}

/** The hosts of the shipped known_hosts (github.com, gitlab.com, ...), each with its keys, all for user `git`. */
export function shippedGitHosts(text = shippedKnownHosts()): GitHostPin[] {
  const byName = new Map<string, GitHostPin>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [names, type, b64] = line.split(/\s+/);
    const fp = type && b64 ? lineFingerprint(`${type} ${b64}`) : undefined;
    if (!fp) continue;
    for (const name of names.split(",")) {
      const pin = byName.get(name) ?? { name, user: "git", fingerprints: [] };
      pin.fingerprints.push(fp);
      byName.set(name, pin);
    }
  }
  return [...byName.values()];
}

/**
 * Every git host the guard may sign for: the shipped ones, then each `git_hosts` entry with the keys it pins
 * (`host_keys`, or `fingerprints` the VM keeps after its keyscan) and its `user` (default `git`). The same keys are what
 * the VM's known_hosts trusts, so a signature is only ever for a host the VM could verify.
 */
export function gitHostPins(entries: GitHostEntry[] = []): GitHostPin[] {
  return [
    ...shippedGitHosts(),
    ...entries.map((h) => ({
      name: h.host,
      user: h.user ?? "git",
      fingerprints: [
        ...(h.host_keys ?? []).map(lineFingerprint).filter((f): f is string => Boolean(f)),
        ...(h.fingerprints ?? []),
      ],
    })),
  ];
}
