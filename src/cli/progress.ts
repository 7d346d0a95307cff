import type { Progress } from "../core/provider.js";

interface Sink {
  json: boolean;
  info(text: string): void;
  warn(text: string): void;
  out(text: string): void;
}

/**
 * Plain progress lines on stderr (non-TTY, CI), or JSON events on stdout under --json:
 * `{"event":"phase","phase":"create","status":"done","ms":1234}`. The Ink progress view (src/tui) renders the same phases.
 */
export class PlainProgress implements Progress {
  private current?: { name: string; start: number };
  readonly timings: { phase: string; ms: number }[] = [];

  constructor(private readonly sink: Sink) {}

  phase(name: string): void {
    this.finish();
    this.current = { name, start: performance.now() };
    if (this.sink.json) this.sink.out(JSON.stringify({ event: "phase", phase: name, status: "started" }));
    else this.sink.info(`• ${name}…`);
  }

  /** Marks the current phase done. */
  finish(): void {
    if (!this.current) return;
    const ms = Math.round(performance.now() - this.current.start);
    this.timings.push({ phase: this.current.name, ms });
    if (this.sink.json) this.sink.out(JSON.stringify({ event: "phase", phase: this.current.name, status: "done", ms }));
    else this.sink.info(`✓ ${this.current.name} (${formatMs(ms)})`);
    this.current = undefined;
  }

  fail(): string | undefined {
    const name = this.current?.name;
    if (this.current && this.sink.json) {
      this.sink.out(JSON.stringify({ event: "phase", phase: this.current.name, status: "failed" }));
    } else if (this.current) this.sink.info(`✗ ${this.current.name}`);
    this.current = undefined;
    return name;
  }

  info(message: string): void {
    if (this.sink.json) this.sink.out(JSON.stringify({ event: "info", message }));
    else this.sink.info(`  ${message}`);
  }

  warn(message: string): void {
    if (this.sink.json) this.sink.out(JSON.stringify({ event: "warning", message }));
    else this.sink.warn(message);
  }
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * Progress for commands whose --json output is one document (down, reap, extend): lines on stderr for humans, nothing
 * on stdout, silent under --json except warnings.
 */
export function stderrProgress(app: Sink): PlainProgress {
  return new PlainProgress({ json: false, info: (t) => app.info(t), warn: (t) => app.warn(t), out: (t) => app.info(t) });
}
