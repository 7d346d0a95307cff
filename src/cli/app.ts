import type { Config } from "../config/defaults.js";
import type { LoadedConfig } from "../config/load.js";
import { ConfigError, Interrupted } from "../core/errors.js";
import type { Progress, Provider } from "../core/provider.js";
import { type Owner, owner } from "../core/owner.js";
import { getProvider } from "../core/registry.js";
import { cacheDir, StateStore, stateDir } from "../core/state.js";
import { PlainProgress } from "./progress.js";

export interface Stream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface Io {
  stdout: Stream;
  stderr: Stream;
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  env: NodeJS.ProcessEnv;
  cwd: string;
}

export interface GlobalOptions {
  provider?: string;
  config?: string;
  json?: boolean;
  yes?: boolean;
  verbose?: boolean;
}

/** Per-invocation runtime: I/O, global flags, config, state and providers, each loaded once and only when asked. */
export class App {
  globals: GlobalOptions = {};
  /**
   * What this command does with a project spuff.yaml the user has not trusted (set per command in main.ts; see
   * docs/adr/0006-project-config-trust.md): "refuse" stops before anything of it is used (asking first in a
   * terminal), "ignore" leaves it out with a warning, "unused" means the command reads no config.
   */
  untrustedProject: "refuse" | "ignore" | "unused" = "refuse";
  private reviewed = false;
  /** The subcommand being run (`ssh`, `up`, ...), once commander has found it. */
  command?: string;
  private loaded?: LoadedConfig;
  private providers = new Map<string, Promise<Provider>>();
  private quick?: typeof import("../config/quick.js");
  private loader?: typeof import("../config/load.js");

  constructor(readonly io: Io) {}

  get json(): boolean {
    return Boolean(this.globals.json);
  }

  get verbose(): boolean {
    return Boolean(this.globals.verbose);
  }

  /** True when a human is at a terminal: stdout and stdin are TTYs and this is not CI. */
  get interactive(): boolean {
    return Boolean(this.io.stdout.isTTY && this.io.stdin.isTTY && !this.io.env.CI && !this.json);
  }

  get color(): boolean {
    return Boolean(this.io.stderr.isTTY && !this.io.env.NO_COLOR && this.io.env.TERM !== "dumb");
  }

  /** Data for scripts and humans: stdout. */
  out(text: string): void {
    this.io.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
  }

  /** Progress, warnings and errors: stderr. Silent under --json except errors. */
  err(text: string): void {
    this.io.stderr.write(text.endsWith("\n") ? text : `${text}\n`);
  }

  info(text: string): void {
    if (!this.json) this.err(text);
  }

  warn(text: string): void {
    this.err(`${this.color ? "\u001b[33mwarning:\u001b[0m" : "warning:"} ${text}`);
  }

  printJson(value: unknown): void {
    this.out(JSON.stringify(value, null, 2));
  }

  /**
   * Loads the config module (zod, yaml) before a command's action runs; `--help` and `--version` never need it,
   * which keeps them fast. A run with no config file to read, and nothing in its environment or flags to validate,
   * gets its config without them (src/config/quick.ts); `longLived` (the picker) loads them anyway, for the files it
   * may find later.
   */
  async prepare(opts: { longLived?: boolean } = {}): Promise<void> {
    this.quick ??= await import("../config/quick.js");
    if (opts.longLived || !this.quick.configWithoutFiles(this.loadOptions())) this.loader ??= await import("../config/load.js");
    if (this.untrustedProject === "refuse" && this.interactive && !this.globals.config && !this.reviewed) {
      this.reviewed = true;
      const { reviewProjectFile } = await import("./commands/trust.js");
      await reviewProjectFile(this);
    }
  }

  /** `--provider` and `SPUFF_PROVIDER` are checked before any file is read, with spuff's words instead of zod's. */
  private checkProviderName(): void {
    const known: readonly string[] = this.quick?.providerNames ?? [];
    for (const [source, name] of [["--provider", this.globals.provider], ["SPUFF_PROVIDER", this.io.env.SPUFF_PROVIDER]] as const) {
      if (name === undefined || (source === "SPUFF_PROVIDER" && (name === "" || this.globals.provider !== undefined))) continue;
      if (!known.includes(name)) {
        throw new ConfigError(`${source}: unknown provider "${name}"`, { hint: `valid providers: ${known.join(", ")}` });
      }
    }
  }

  private loadOptions() {
    return { env: this.io.env, cwd: this.io.cwd, configFile: this.globals.config, provider: this.globals.provider };
  }

  loadedConfig(): LoadedConfig {
    if (!this.loaded) {
      this.checkProviderName();
      if (this.loader) this.loaded = this.loader.loadConfig({ ...this.loadOptions(), untrusted: this.untrustedProject === "ignore" ? "ignore" : "refuse" });
      else if (!this.quick) throw new Error("App.prepare() must run before config is read");
      else {
        // Asked again now, as loadConfig would read the files now: one that appeared since prepare() is never passed over.
        const now = this.quick.configWithoutFiles(this.loadOptions());
        if (!now) throw new ConfigError("a config file appeared while spuff was starting", { hint: "run the command again" });
        this.loaded = now;
      }
      for (const w of this.loaded.warnings) this.warn(w);
    }
    return this.loaded;
  }

  config(): Config {
    return this.loadedConfig().config;
  }

  state(): StateStore {
    return new StateStore(stateDir(this.io.env));
  }

  /** This machine's owner id (created once in the state directory) and the older ids it still answers to. */
  owner(): Owner {
    return owner(this.io.env);
  }

  async provider(name: string = this.config().provider): Promise<Provider> {
    let p = this.providers.get(name);
    if (!p) {
      await import("../../providers/index.js");
      p = getProvider(name, {
        config: this.config(),
        env: this.io.env,
        stateDir: stateDir(this.io.env),
        cacheDir: cacheDir(this.io.env),
        verbose: this.verbose,
      });
      this.providers.set(name, p);
    }
    return p;
  }

  /** Providers `ls`, `down` and `reap` ask: the one named by --provider, else the configured one plus any in local state. */
  providerScope(): string[] {
    if (this.globals.provider) return [this.globals.provider];
    return [...new Set([this.config().provider, ...this.state().list().map((r) => r.provider)])];
  }

  progress(): Progress {
    return new PlainProgress(this);
  }

  /**
   * Runs `fn` with an AbortSignal tied to Ctrl-C/SIGTERM: the first signal aborts (so `fn` can roll back),
   * a second one exits at once with 130.
   */
  async interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    let count = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      count++;
      if (count === 1) {
        this.err(`\n${sig === "SIGINT" ? "Ctrl-C" : sig}: stopping and cleaning up (press Ctrl-C again to exit at once)`);
        ac.abort(new Interrupted());
      } else {
        this.err("exiting at once; leftover resources are labelled and `spuff reap` removes them");
        process.exit(130);
      }
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    try {
      return await fn(ac.signal);
    } finally {
      // After an interrupt, a further Ctrl-C while spuff reports and exits still means "exit now" (130), never a
      // death by signal. The new handlers go in before the old ones go out: with no listener left for an instant,
      // Node restores the default action, and a Ctrl-C in that instant would kill spuff.
      if (count > 0) {
        const now = () => process.exit(130);
        process.once("SIGINT", now);
        process.once("SIGTERM", now);
      }
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }
}
