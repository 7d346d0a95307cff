import { SpuffError } from "../core/errors.js";
import type { Progress } from "../core/provider.js";

export interface PhaseState {
  name: string;
  status: "running" | "done" | "failed";
  /** performance.now() when it started. */
  start: number;
  /** Duration once it ended. */
  ms?: number;
}

export interface ProgressLine {
  level: "info" | "warn";
  text: string;
}

export interface ProgressSnapshot {
  phases: PhaseState[];
  /** Info and warning lines, oldest first (only the last `keep` info lines are kept; warnings are all kept). */
  lines: ProgressLine[];
}

/**
 * The phases core and the providers report through `Progress`, as an observable store for the Ink progress view
 * (`useSyncExternalStore`). Same contract as the CLI's PlainProgress: `phase()` ends the previous phase, `finish()`
 * ends the current one, `fail()` marks it failed and returns its name, `timings` lists the finished ones.
 */
export class ProgressModel implements Progress {
  readonly timings: { phase: string; ms: number }[] = [];
  private snap: ProgressSnapshot = { phases: [], lines: [] };
  private readonly listeners = new Set<() => void>();

  constructor(private readonly keep = 6) {}

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  readonly snapshot = (): ProgressSnapshot => this.snap;

  private set(next: ProgressSnapshot): void {
    this.snap = next;
    for (const l of this.listeners) l();
  }

  private end(status: "done" | "failed"): PhaseState | undefined {
    const last = this.snap.phases.at(-1);
    if (!last || last.status !== "running") return undefined;
    const ended: PhaseState = { ...last, status, ms: Math.round(performance.now() - last.start) };
    if (status === "done") this.timings.push({ phase: ended.name, ms: ended.ms ?? 0 });
    this.set({ ...this.snap, phases: [...this.snap.phases.slice(0, -1), ended] });
    return ended;
  }

  phase(name: string): void {
    this.end("done");
    this.set({ ...this.snap, phases: [...this.snap.phases, { name, status: "running", start: performance.now() }] });
  }

  finish(): void {
    this.end("done");
  }

  fail(): string | undefined {
    return this.end("failed")?.name;
  }

  info(message: string): void {
    this.add({ level: "info", text: message });
  }

  warn(message: string): void {
    this.add({ level: "warn", text: message });
  }

  private add(line: ProgressLine): void {
    const lines = [...this.snap.lines, line];
    let infos = lines.filter((l) => l.level === "info").length;
    const kept = lines.filter((l) => l.level === "warn" || infos-- <= this.keep);
    this.set({ ...this.snap, lines: kept });
  }
}

/** What the TUI shows for an error: the message, notes and hints of a SpuffError, or the message of anything else. */
export interface ErrorInfo {
  message: string;
  notes: string[];
  hints: string[];
}

export function errorInfo(err: unknown): ErrorInfo {
  if (err instanceof SpuffError) return { message: err.message, notes: err.notes, hints: err.hints };
  const message = err instanceof Error ? err.message : String(err);
  return { message, notes: [], hints: ["this is a bug or an unexpected failure; run the same command outside the TUI with --verbose for details"] };
}
