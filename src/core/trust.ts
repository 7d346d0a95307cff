import { existsSync, readFileSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import { UserError } from "./errors.js";
import { withLock, writeFileAtomic } from "./state.js";

/**
 * The project config files the user trusted, each by absolute path and the sha256 of its exact bytes
 * (docs/adr/0006-project-config-trust.md). Stored as $XDG_STATE_HOME/spuff/trusted-projects.json; written atomically
 * under the state lock. Any change to a file's bytes makes it untrusted again.
 */
export interface TrustEntry {
  path: string;
  sha256: string;
  trustedAt: string;
}

export type TrustStatus = "trusted" | "changed" | "new";

interface TrustFile {
  version: 1;
  files: TrustEntry[];
}

export function sha256(bytes: Buffer | string): string {
  // node:crypto loads when first used (a project file to check), not with every config file.
  return process.getBuiltinModule("node:crypto").createHash("sha256").update(bytes).digest("hex");
}

/** The path a file is trusted under: absolute, symlinks resolved (when it exists). */
export function canonicalPath(file: string, cwd: string = process.cwd()): string {
  const abs = resolve(cwd, file);
  try {
    return realpathSync(abs);
  } catch {
    return abs;
  }
}

export class TrustStore {
  constructor(readonly dir: string) {}

  get file(): string {
    return `${this.dir}/trusted-projects.json`;
  }

  list(): TrustEntry[] {
    if (!existsSync(this.file)) return [];
    let parsed: TrustFile;
    try {
      parsed = JSON.parse(readFileSync(this.file, "utf8")) as TrustFile;
    } catch (err) {
      throw new UserError(`cannot read the trusted project files list ${this.file}: ${(err as Error).message}`, {
        hint: `fix or delete ${this.file} (deleting it untrusts every project file; \`spuff trust\` them again)`,
      });
    }
    if (parsed?.version !== 1 || !Array.isArray(parsed.files)) {
      throw new UserError(`${this.file} is not a trusted project files list spuff understands`, {
        hint: `delete ${this.file} and trust your project files again with \`spuff trust PATH\``,
      });
    }
    return parsed.files.filter((e) => typeof e?.path === "string" && /^[0-9a-f]{64}$/.test(e?.sha256 ?? ""));
  }

  entry(path: string): TrustEntry | undefined {
    return this.list().find((e) => e.path === path);
  }

  /** Whether these exact bytes of `path` are trusted; "changed" when the path is trusted with other content. */
  status(path: string, digest: string): TrustStatus {
    const e = this.entry(path);
    if (!e) return "new";
    return e.sha256 === digest ? "trusted" : "changed";
  }

  /** Trusts `digest` as the content of `path`, replacing what was trusted for that path before. */
  async trust(path: string, digest: string, now = new Date()): Promise<TrustEntry> {
    const entry: TrustEntry = { path, sha256: digest, trustedAt: now.toISOString() };
    await withLock(this.dir, () => this.write([...this.list().filter((e) => e.path !== path), entry]));
    return entry;
  }

  /** Removes `path`; false when it was not trusted. */
  async revoke(path: string): Promise<boolean> {
    return withLock(this.dir, () => {
      const all = this.list();
      const rest = all.filter((e) => e.path !== path);
      if (rest.length === all.length) return false;
      this.write(rest);
      return true;
    });
  }

  private write(files: TrustEntry[]): void {
    const data: TrustFile = { version: 1, files: files.sort((a, b) => a.path.localeCompare(b.path)) };
    writeFileAtomic(this.file, `${JSON.stringify(data, null, 2)}\n`, 0o600);
  }
}
