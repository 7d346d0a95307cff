import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

// ~/.ssh/rc, /etc/profile.d/spuff-agent.sh and ~/.tmux.conf, run by the real shells and tmux, with real unix sockets
// standing in for forwarded agents.
const RC = resolve("cloud-init/files/ssh-rc.sh");
const PROFILE = resolve("cloud-init/files/profile-agent.sh");
const TMUX_CONF = resolve("cloud-init/files/tmux.conf");
let home: string;
const servers: Server[] = [];
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), "spuff-rc-"));
  mkdirSync(join(home, ".ssh"));
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  rmSync(home, { recursive: true, force: true });
});

async function socket(name: string): Promise<string> {
  const path = join(home, name);
  const s = createServer();
  servers.push(s);
  await new Promise<void>((r) => s.listen(path, r));
  return path;
}

const link = () => join(home, ".ssh", "agent.sock");
const linkExists = () => {
  try {
    lstatSync(link());
    return true;
  } catch {
    return false;
  }
};

// sshd runs ~/.ssh/rc with /bin/sh (dash on Debian and Ubuntu); bash must work too.
for (const shell of ["sh", "bash"]) {
  const runRc = (env: Record<string, string>) => spawnSync(shell, [RC], { env: { PATH: process.env.PATH, HOME: home, ...env }, encoding: "utf8" });

  describe(`~/.ssh/rc under ${shell}`, () => {
    it("points the stable link at the current forwarded agent", async () => {
      const a = await socket("agent-a");
      const r = runRc({ SSH_AUTH_SOCK: a });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      expect(readlinkSync(link())).toBe(a);
    });

    it("replaces a link to an older connection's agent, leaving no temp link behind", async () => {
      const a = await socket("agent-a");
      const b = await socket("agent-b");
      runRc({ SSH_AUTH_SOCK: a });
      runRc({ SSH_AUTH_SOCK: b });
      expect(readlinkSync(link())).toBe(b);
      expect(readdirSync(join(home, ".ssh"))).toEqual(["agent.sock"]);
    });

    it("replaces a stale link (its agent is gone) with the new agent", async () => {
      symlinkSync(join(home, "gone.sock"), link());
      const b = await socket("agent-b");
      expect(runRc({ SSH_AUTH_SOCK: b }).status).toBe(0);
      expect(readlinkSync(link())).toBe(b);
    });

    it("removes a stale link when the new login has no agent", () => {
      symlinkSync(join(home, "gone.sock"), link());
      expect(runRc({}).status).toBe(0);
      expect(linkExists()).toBe(false);
    });

    it("ignores a missing socket and keeps a working link", async () => {
      const a = await socket("agent-a");
      runRc({ SSH_AUTH_SOCK: a });
      const r = runRc({ SSH_AUTH_SOCK: join(home, "missing.sock") });
      expect(r.status).toBe(0);
      expect(r.stderr).toBe("");
      expect(readlinkSync(link())).toBe(a);
    });

    it("ignores a path that is not a socket", () => {
      const r = runRc({ SSH_AUTH_SOCK: RC });
      expect(r.status).toBe(0);
      expect(linkExists()).toBe(false);
    });
  });
}

describe("login shells and tmux use the stable link", () => {
  const profileSock = (env: Record<string, string>) =>
    spawnSync("sh", ["-c", `. "${PROFILE}"; printf %s "$SSH_AUTH_SOCK"`], { env: { PATH: process.env.PATH, HOME: home, ...env }, encoding: "utf8" }).stdout;

  it("the profile exports the link in SSH sessions when it points at a live agent", async () => {
    const a = await socket("agent-a");
    spawnSync("sh", [RC], { env: { PATH: process.env.PATH, HOME: home, SSH_AUTH_SOCK: a } });
    expect(profileSock({ SSH_CONNECTION: "1 2 3 4", SSH_AUTH_SOCK: a })).toBe(link());
    expect(profileSock({ TMUX: "/tmp/tmux-0/default,1,0", SSH_AUTH_SOCK: "/old" })).toBe(link());
    // Not over SSH, or no live link: the variable is left alone.
    expect(profileSock({ SSH_AUTH_SOCK: a })).toBe(a);
    rmSync(link());
    expect(profileSock({ SSH_CONNECTION: "1 2 3 4", SSH_AUTH_SOCK: a })).toBe(a);
  });

  it("tmux panes get the link, also in a session created from a connection with another socket", async () => {
    const tmux = ["-L", `spuff-test-${process.pid}`, "-f", TMUX_CONF];
    const env = { PATH: process.env.PATH, HOME: home, SSH_AUTH_SOCK: "/tmp/ssh-first/agent.1", TERM: "xterm" };
    const out = join(home, "pane-env");
    try {
      expect(spawnSync("tmux", [...tmux, "new-session", "-d", "-s", "spuff", "sleep 60"], { env }).status).toBe(0);
      const shown = spawnSync("tmux", [...tmux, "show-environment", "-g", "SSH_AUTH_SOCK"], { env, encoding: "utf8" });
      expect(shown.stdout.trim()).toBe(`SSH_AUTH_SOCK=${link()}`);
      // A later connection (another agent socket) opens a window: its pane still sees the stable link.
      const later = { ...env, SSH_AUTH_SOCK: "/tmp/ssh-second/agent.2" };
      spawnSync("tmux", [...tmux, "new-window", "-t", "spuff", `printf %s "$SSH_AUTH_SOCK" > ${out}; sleep 60`], { env: later });
      for (let i = 0; i < 100 && !existsSync(out); i++) spawnSync("sleep", ["0.05"]);
      expect(readFileSync(out, "utf8")).toBe(link());
    } finally {
      spawnSync("tmux", [...tmux, "kill-server"], { env });
    }
  });
});
