import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

function globToRegExp(pattern: string): RegExp {
  return new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
}

/** Whether an OpenSSH `Host` pattern list matches `host` (supports *, ? and !negation). */
export function hostMatches(patterns: string[], host: string): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith("!")) {
      if (globToRegExp(p.slice(1)).test(host)) return false;
    } else if (globToRegExp(p).test(host)) matched = true;
  }
  return matched;
}

/**
 * The `IdentityAgent` that the user's ~/.ssh/config sets for `host` (first match wins, as in OpenSSH), e.g. the
 * 1Password agent. `Match` blocks are skipped: spuff cannot evaluate their conditions.
 */
export function identityAgentFor(host: string, env: NodeJS.ProcessEnv, file = join(env.HOME || homedir(), ".ssh", "config")): string | undefined {
  if (!existsSync(file)) return undefined;
  let active = true;
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(\S+)\s*=?\s*(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1].toLowerCase();
    if (key === "host") active = hostMatches(m[2].split(/\s+/), host);
    else if (key === "match") active = false;
    else if (active && key === "identityagent") return m[2].trim();
  }
  return undefined;
}
