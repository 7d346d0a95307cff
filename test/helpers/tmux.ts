import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Whether tmux can run here (test/setup.d/10-base.sh installs it). */
export const haveTmux = spawnSync("tmux", ["-V"]).status === 0;

/**
 * A program in a real terminal: a detached tmux session on a private server socket, driven with `send-keys` and read
 * with `capture-pane`. The command runs with exactly `env` (nothing of the test runner's environment leaks in); when
 * it ends, the pane prints `[exit N]` and stays, so its last screen and exit code can still be read.
 */
export class Terminal {
  private readonly dir = mkdtempSync(join(tmpdir(), "spuff-tmux-"));
  private readonly socket = join(this.dir, "sock");

  private constructor(readonly width: number, readonly height: number) {}

  static start(argv: string[], env: NodeJS.ProcessEnv, opts: { width?: number; height?: number; cwd?: string } = {}): Terminal {
    const t = new Terminal(opts.width ?? 100, opts.height ?? 30);
    const script = join(t.dir, "run.sh");
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const vars = Object.entries({ ...env, TERM: "xterm-256color" })
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${q(String(v))}`);
    writeFileSync(
      script,
      `cd ${q(opts.cwd ?? env.HOME ?? t.dir)}\nenv -i ${vars.join(" ")} ${argv.map(q).join(" ")}\necho "[exit $?]"\nexec sleep 3600\n`,
    );
    t.tmux("new-session", "-d", "-s", "spuff", "-x", String(t.width), "-y", String(t.height), `bash ${q(script)}`);
    return t;
  }

  private tmux(...args: string[]): string {
    return execFileSync("tmux", ["-S", this.socket, "-f", "/dev/null", ...args], { encoding: "utf8" });
  }

  /** Types keys: tmux key names ("Enter", "Down", "Escape", "C-u") or literal text with `{ literal: true }`. */
  keys(keys: string[] | string, opts: { literal?: boolean } = {}): void {
    const list = Array.isArray(keys) ? keys : [keys];
    this.tmux("send-keys", "-t", "spuff", ...(opts.literal ? ["-l"] : []), ...list);
  }

  /** The visible screen as text, trailing blanks trimmed. */
  screen(): string {
    return this.tmux("capture-pane", "-p", "-t", "spuff")
      .split("\n")
      .map((l) => l.trimEnd())
      .join("\n")
      .trimEnd();
  }

  /** Polls the screen until `check` holds; on timeout throws with the last screen. */
  async waitFor(check: string | RegExp | ((screen: string) => boolean), timeoutMs = 20_000): Promise<string> {
    const ok = typeof check === "string" ? (s: string) => s.includes(check) : check instanceof RegExp ? (s: string) => check.test(s) : check;
    const end = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      last = this.screen();
      if (ok(last)) return last;
      if (Date.now() > end) throw new Error(`terminal never showed ${String(check)}; last screen:\n${last}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The program's exit code once it ended (`[exit N]` on the screen). */
  async exitCode(timeoutMs = 20_000): Promise<number> {
    const s = await this.waitFor(/\[exit \d+\]/, timeoutMs);
    return Number(/\[exit (\d+)\]/.exec(s)?.[1]);
  }

  close(): void {
    spawnSync("tmux", ["-S", this.socket, "kill-server"]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
