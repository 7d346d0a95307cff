import { readFileSync } from "node:fs";
import { templateDir } from "../cloudinit/template-dir.js";
import type { StateStore, VmRecord } from "./state.js";

/** One git work tree on a VM with work that exists nowhere else. */
export interface UnsavedRepo {
  /** Path relative to the login user's home. */
  path: string;
  /** Uncommitted paths (`git status --porcelain` lines). */
  changed: number;
  /** Commits on local branches that no remote branch has. */
  unpushed: number;
  stashes: number;
}

/** What `down` found on a VM without a workspace volume: `checked` false says why it could not look. */
export interface UnsavedWork {
  checked: boolean;
  reason?: string;
  repos: UnsavedRepo[];
}

const MAX_OUTPUT = 64 * 1024;

/**
 * Parses the VM's report (cloud-init/remote/unsaved-work.sh). The VM is untrusted: only well-formed lines count, paths
 * lose control characters, and a report without its end line is "not checked" rather than "nothing unsaved".
 */
export function parseUnsaved(stdout: string): UnsavedWork {
  const lines = stdout.slice(0, MAX_OUTPUT).split("\n");
  if (!lines.includes("end")) return { checked: false, reason: "the VM's report was cut short", repos: [] };
  const repos: UnsavedRepo[] = [];
  for (const line of lines) {
    const m = /^repo\t([^\t]{1,4096})\t *(\d{1,9})\t *(\d{1,9})\t *(\d{1,9})$/.exec(line);
    if (!m) continue;
    const repo = { path: m[1].replace(/\p{Cc}/gu, "?"), changed: Number(m[2]), unpushed: Number(m[3]), stashes: Number(m[4]) };
    if (repo.changed || repo.unpushed || repo.stashes) repos.push(repo);
  }
  return { checked: true, repos };
}

/** Looks at the VM's git work trees over SSH (pinned host key, the per-VM key); never throws. */
export async function unsavedWork(state: StateStore, record: VmRecord, signal?: AbortSignal, timeoutMs = 20_000): Promise<UnsavedWork> {
  try {
    const script = readFileSync(`${templateDir()}remote/unsaved-work.sh`, "utf8");
    // Loaded here: `down` without a VM to ask needs no SSH code.
    const [{ execOnVm }, { vmTarget }] = await Promise.all([import("../ssh/connect.js"), import("./session.js")]);
    const res = await execOnVm(vmTarget(state, record), `sh -c '${script.replaceAll("'", `'\\''`)}'`, signal, timeoutMs);
    if (res.code !== 0) return { checked: false, reason: `the check exited with ${res.code}`, repos: [] };
    return parseUnsaved(res.stdout);
  } catch (err) {
    return { checked: false, reason: (err as Error).message, repos: [] };
  }
}

/** "~/work/api: 3 uncommitted changes, 2 unpushed commits, 1 stash". */
export function describeUnsaved(r: UnsavedRepo): string {
  const n = (k: number, one: string, many: string) => `${k} ${k === 1 ? one : many}`;
  const parts = [
    ...(r.changed ? [n(r.changed, "uncommitted change", "uncommitted changes")] : []),
    ...(r.unpushed ? [n(r.unpushed, "unpushed commit", "unpushed commits")] : []),
    ...(r.stashes ? [n(r.stashes, "stash", "stashes")] : []),
  ];
  return `~/${r.path}: ${parts.join(", ")}`;
}
