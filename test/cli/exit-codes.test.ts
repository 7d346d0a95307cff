import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StateStore } from "../../src/core/state.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { runCli, tempHome, writeUserConfig } from "../helpers/cli.js";
import { type Sshd, startSshd } from "../helpers/sshd.js";

// How a script tells `spuff ssh`'s own failures from the remote command's exit code (README, "Exit codes"), against a
// real sshd on loopback standing in for the VM.
describe("spuff ssh exit codes: the remote's code, or 255 when spuff itself failed", () => {
  const t = tempHome();
  const clientKey = ed25519KeyPair("spuff-vm");
  let vm: Sshd;
  const spuff = (argv: string[]) => runCli(argv, { env: { ...t.env, SSH_AUTH_SOCK: "" }, cwd: t.home });

  beforeAll(async () => {
    vm = await startSshd({ authorizedKeys: [clientKey.public.trim()], extraConfig: ["AllowUsers spuff-test"] });
    const store = new StateStore(join(t.env.XDG_STATE_HOME as string, "spuff"));
    const record = { name: "box", provider: "local", user: "spuff-test", createdAt: new Date().toISOString(), hostKey: vm.hostKey, endpoint: { host: "127.0.0.1", port: vm.port } };
    await store.save(record, { private: clientKey.private, public: clientKey.public.trim() });
    await store.save({ ...record, name: "down", endpoint: { host: "127.0.0.1", port: 1 } }, { private: clientKey.private, public: clientKey.public.trim() });
    // No agent in this test: ssh.forward_agent false is the config's reason, not --no-agent.
    writeUserConfig(t.env, "ssh:\n  user: spuff-test\n  tmux: false\n  forward_agent: false\n");
  });
  afterAll(async () => {
    await vm?.stop();
    t.cleanup();
  });

  it("passes the remote command's 1 and 2 through, with nothing of spuff's own on stderr but the no-agent note", async () => {
    for (const code of [1, 2]) {
      const r = await spuff(["ssh", "box", "--", `exit ${code}`]);
      expect(r.code).toBe(code);
      expect(r.stderr).not.toMatch(/^error:/m);
    }
  });

  it("exits 255 when spuff itself fails: unknown VM, unreachable VM, bad config", async () => {
    const unknown = await spuff(["ssh", "nope", "--", "true"]);
    expect(unknown.code).toBe(255);
    expect(unknown.stderr).toMatch(/^error: no VM named "nope"/m);

    const unreachable = await spuff(["ssh", "down", "--", "true"]);
    expect(unreachable.code).toBe(255);
    expect(unreachable.stderr).toMatch(/^error: cannot reach down at 127\.0\.0\.1:1/m);

    writeFileSync(join(t.home, "bad.yaml"), "ssh:\n  tmux: perhaps\n");
    const bad = await spuff(["--config", join(t.home, "bad.yaml"), "ssh", "box", "--", "true"]);
    expect(bad.code).toBe(255);
    expect(bad.stderr).toMatch(/^error: /m);

    const flag = await spuff(["ssh", "box", "--bogus"]);
    expect(flag.code).toBe(255);
    expect(flag.stderr).toContain("unknown option '--bogus'");
  });

  it("other commands keep 1 for a user error", async () => {
    const r = await spuff(["status", "nope"]);
    expect(r.code).toBe(1);
  });

  it("the no-agent note names ssh.forward_agent when that is why, not a --no-agent that was never given", async () => {
    const r = await spuff(["ssh", "box", "--", "exit 3"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("no SSH agent was forwarded (ssh.forward_agent is false)");
    expect(r.stderr).toContain("set ssh.forward_agent: true in your config");
    expect(r.stderr).not.toContain("--no-agent");

    const flagged = await spuff(["ssh", "box", "--no-agent", "--", "exit 3"]);
    expect(flagged.stderr).toContain("no SSH agent was forwarded (--no-agent)");
    expect(flagged.stderr).toContain("run it without --no-agent");
  });
});
