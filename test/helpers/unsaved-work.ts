import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { basename, join } from "node:path";

/** The stand-in VMs' login user (test/setup.d/15-users.sh) and its home, which is the "VM's" home in those tests. */
const USER = "spuff-test";
const HOME = `/home/${USER}`;

const as = (...cmd: string[]) => execFileSync("runuser", ["-u", USER, "--", ...cmd], { encoding: "utf8" });
const git = (dir: string, ...args: string[]) => as("git", "-C", dir, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", ...args);

export interface WorkTree {
  /** The directory under the login user's home that holds it (remove it with `remove`). */
  dir: string;
  /** Its path relative to that home, as spuff reports it: "<dir>/proj". */
  path: string;
  remove(): void;
}

/**
 * A real git work tree in the stand-in VM's login user's home, made as that user: `dirty` gives it a commit that no
 * remote has, a stash and an uncommitted change (what `spuff down` must report); otherwise it is a clean, empty one.
 */
export function workTree(prefix: string, dirty: boolean): WorkTree {
  const dir = mkdtempSync(join(HOME, prefix));
  execFileSync("chown", [`${USER}:${USER}`, dir]);
  const repo = join(dir, "proj");
  as("git", "init", "-q", repo);
  if (dirty) {
    as("sh", "-c", `echo one > ${repo}/a.txt`);
    git(repo, "add", "a.txt");
    git(repo, "commit", "-qm", "first");
    as("sh", "-c", `echo two >> ${repo}/a.txt`);
    git(repo, "stash", "-q");
    as("sh", "-c", `echo three >> ${repo}/a.txt`);
  }
  return { dir, path: `${basename(dir)}/proj`, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** How spuff describes the dirty work tree of `workTree(prefix, true)`. */
export const DIRTY = "1 uncommitted change, 1 unpushed commit, 1 stash";
