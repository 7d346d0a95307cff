/**
 * One error family. A `UserError` is something the user can fix (exit 1); a `ProviderError` is a failure of a
 * cloud API or local hypervisor (exit 2); `Interrupted` is Ctrl-C (exit 130). Every error may carry `hint` lines
 * that tell the user what to do next. The single top-level handler in src/cli/main.ts prints them.
 */
export interface ErrorDetails {
  hint?: string | string[];
  notes?: string[];
  cause?: unknown;
}

export class SpuffError extends Error {
  readonly exitCode: number = 1;
  readonly hints: string[];
  readonly notes: string[];
  constructor(message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.hints = details.hint === undefined ? [] : Array.isArray(details.hint) ? details.hint : [details.hint];
    this.notes = details.notes ?? [];
  }
}

/** The user did something wrong: bad flag, bad config, unknown VM name. Exit code 1. */
export class UserError extends SpuffError {
  override readonly exitCode: number = 1;
}

/** A configuration file problem; `notes` hold one line per issue (`file:line:col: path: message`). */
export class ConfigError extends UserError {}

/** The provider API or the hypervisor failed, or refused. Exit code 2. */
export class ProviderError extends SpuffError {
  override readonly exitCode: number = 2;
}

/** Ctrl-C or SIGTERM. Exit code 130. */
export class Interrupted extends SpuffError {
  override readonly exitCode: number = 130;
  constructor(message = "interrupted") {
    super(message);
  }
}

export const EXIT = { ok: 0, user: 1, provider: 2, interrupted: 130 } as const;
