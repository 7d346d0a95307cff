import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { UserError } from "./errors.js";
import { writeFileAtomic } from "./state.js";

/**
 * `spuff reap --install`: a user-level timer that runs `spuff reap` every 10 minutes — a systemd user timer on Linux,
 * a launchd agent on macOS — so VMs that powered themselves off, or outlived their TTL, are deleted even when nobody
 * runs spuff. The window left is a machine that is off or asleep (docs/adr/0002-idle-and-reaper.md).
 */
export interface TimerFiles {
  files: string[];
  /** The command that enables it (run by `install` unless told not to). */
  enable: string[];
  disable: string[];
}

function command(): { node: string; bin: string } {
  const bin = process.argv[1];
  if (!bin) throw new UserError("cannot tell where the spuff program is", { hint: "run `spuff reap --install` from the installed spuff" });
  return { node: process.execPath, bin };
}

function systemdDir(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config"), "systemd", "user");
}

function launchdFile(env: NodeJS.ProcessEnv): string {
  return join(env.HOME || homedir(), "Library", "LaunchAgents", "dev.spuff.reap.plist");
}

/** systemd quotes arguments with double quotes and expands % specifiers; escape both. */
function systemdQuote(arg: string): string {
  return `"${arg.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("%", "%%")}"`;
}

function xml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

export function timerFiles(env: NodeJS.ProcessEnv, platform: NodeJS.Platform, write: boolean): TimerFiles {
  const { node, bin } = command();
  if (platform === "linux") {
    const dir = systemdDir(env);
    const service = join(dir, "spuff-reap.service");
    const timer = join(dir, "spuff-reap.timer");
    if (write) {
      mkdirSync(dir, { recursive: true });
      writeFileAtomic(
        service,
        [
          "[Unit]",
          "Description=spuff reap: delete expired and powered-off spuff VMs and their leftovers",
          "",
          "[Service]",
          "Type=oneshot",
          `ExecStart=${[node, bin, "reap"].map(systemdQuote).join(" ")}`,
          "",
        ].join("\n"),
        0o644,
      );
      writeFileAtomic(
        timer,
        ["[Unit]", "Description=Run spuff reap every 10 minutes", "", "[Timer]", "OnBootSec=2min", "OnUnitActiveSec=10min", "Persistent=true", "", "[Install]", "WantedBy=timers.target", ""].join("\n"),
        0o644,
      );
    }
    return {
      files: [service, timer],
      enable: ["systemctl", "--user", "enable", "--now", "spuff-reap.timer"],
      disable: ["systemctl", "--user", "disable", "--now", "spuff-reap.timer"],
    };
  }
  if (platform === "darwin") {
    const file = launchdFile(env);
    if (write) {
      mkdirSync(join(file, ".."), { recursive: true });
      const args = [node, bin, "reap"].map((a) => `    <string>${xml(a)}</string>`).join("\n");
      writeFileAtomic(
        file,
        `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>dev.spuff.reap</string>
  <key>ProgramArguments</key>
  <array>
${args}
  </array>
  <key>StartInterval</key><integer>600</integer>
  <key>RunAtLoad</key><true/>
</dict>
</plist>
`,
        0o644,
      );
    }
    return { files: [file], enable: ["launchctl", "load", "-w", file], disable: ["launchctl", "unload", "-w", file] };
  }
  throw new UserError(`spuff reap --install supports Linux (systemd) and macOS (launchd), not ${platform}`, {
    hint: "run `spuff reap` from your own scheduler every 10 minutes",
  });
}

/** Writes the timer files and, when `enable`, turns the timer on. Returns what was done. */
export function installReapTimer(env: NodeJS.ProcessEnv, platform: NodeJS.Platform, enable: boolean): TimerFiles & { enabled: boolean } {
  const t = timerFiles(env, platform, true);
  if (!enable) return { ...t, enabled: false };
  if (platform === "linux") runOrExplain(["systemctl", "--user", "daemon-reload"], t);
  runOrExplain(t.enable, t);
  return { ...t, enabled: true };
}

export function uninstallReapTimer(env: NodeJS.ProcessEnv, platform: NodeJS.Platform): string[] {
  const t = timerFiles(env, platform, false);
  const present = t.files.filter((f) => existsSync(f));
  if (present.length) spawnSync(t.disable[0], t.disable.slice(1), { stdio: "ignore" });
  for (const f of present) rmSync(f, { force: true });
  return present;
}

function runOrExplain(cmd: string[], t: TimerFiles): void {
  const r = spawnSync(cmd[0], cmd.slice(1), { encoding: "utf8" });
  if (r.status === 0) return;
  const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split("\n")[0];
  throw new UserError(`wrote ${t.files.join(", ")} but \`${cmd.join(" ")}\` failed: ${why}`, {
    hint: [
      `enable it from a login session with \`${t.enable.join(" ")}\``,
      "on a server, `loginctl enable-linger $USER` lets user timers run while you are logged out",
    ],
  });
}
