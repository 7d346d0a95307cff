import { execFileSync, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { runCli, tempHome } from "../test/helpers/cli.js";
import { startAgent, startGitServer } from "../test/helpers/sshd.js";

const t = tempHome();
const agent = startAgent(["allowed-key"]);
const git = await startGitServer([agent.keys[0].public]);
const fp = execFileSync("ssh-keygen", ["-lf", "-"], { input: `${git.hostKey}\n`, encoding: "utf8" }).split(" ")[1];
const env = { ...t.env, SPUFF_CACHE_DIR: "/root/.cache/spuff", SSH_AUTH_SOCK: agent.socket };
const stateDir = join(t.env.XDG_STATE_HOME as string, "spuff");
writeFileSync(join(t.home, "spuff.yaml"), stringify({
  provider: "local",
  local: { cpus: 2, memory: "1G", disk: "4G", guest_forwards: [`10.0.2.100:22=127.0.0.1:${git.port}`] },
  ssh: { allowed_keys: [agent.keys[0].fingerprint], tmux: false },
  git_hosts: [{ host: "githost.test", address: "10.0.2.100", fingerprints: [fp] }, { host: "tofu.test", address: "10.0.2.100" }],
  packages: ["ripgrep"],
  dotfiles: { repo: "git@githost.test:private.git", install: "cp README ~/dotfiles-installed" },
  repositories: ["git@githost.test:private.git"],
  setup: ["echo \"setup ran as $(id -un): {ok}\" > ~/setup.txt"],
}));
const spuff = async (...argv: string[]) => {
  const r = await runCli(argv, { env, cwd: t.home });
  console.log(`$ spuff ${argv.join(" ")}  -> ${r.code}\n${r.stdout}${r.stderr}`);
  return r;
};
const t0 = Date.now();
try {
  await spuff("up", "maxci");
  console.log(`up took ${(Date.now() - t0) / 1000}s`);
  await spuff("ssh", "maxci", "--", "cloud-init", "status", "--long");
  await spuff("ssh", "maxci", "--", "cat", "~/setup.txt", ";", "grep", "-h", "test", "/etc/ssh/ssh_known_hosts", ";", "sudo", "grep", "-h", "spuff", "/var/log/cloud-init-output.log");
  await spuff("ssh", "maxci", "--", "bash", "-lc", "true", ";", "ls", "~/src/private", "~/.dotfiles", ";", "cat", "~/dotfiles-installed", ";", "ls", "-la", "~/.ssh/", "~/.local/state/spuff/");
  await spuff("ssh", "maxci", "--", "git", "clone", "-q", "git@tofu.test:private.git", "t2", "&&", "cat", "t2/README");
  await spuff("ssh", "maxci", "--", "sudo", "sshd", "-T", "|", "grep", "-Ei", "'^(hostkey|passwordauthentication|permitrootlogin|allowagentforwarding|clientaliveinterval|allowstreamlocalforwarding) '", ";", "locale", ";", "hostname");
} finally {
  await spuff("down", "maxci", "--yes").catch(() => {});
  spawnSync("sh", ["-c", `for f in ${stateDir}/local/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done`]);
  agent.stop();
  await git.stop();
  t.cleanup();
}
