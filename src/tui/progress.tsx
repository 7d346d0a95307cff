import { Box, render, Text } from "ink";
import { useSyncExternalStore } from "react";
import type { App } from "../cli/app.js";
import { formatMs } from "../cli/progress.js";
import { type ErrorInfo, ProgressModel } from "./model.js";
import { ErrorBox, Spinner } from "./widgets.js";

/**
 * Live phases of a long operation (`spuff up`, the wizard's create): a spinner on the running phase, ✓ and the duration
 * for finished ones, ✗ for the one that failed, then the last info lines and every warning. `failure` adds which
 * phase failed with the error's message and hints.
 */
export function ProgressView({ model, title, failure }: { model: ProgressModel; title?: string; failure?: ErrorInfo }) {
  const snap = useSyncExternalStore(model.subscribe, model.snapshot);
  const failed = snap.phases.find((p) => p.status === "failed");
  const running = snap.phases.some((p) => p.status === "running");
  return (
    <Box flexDirection="column">
      {title ? <Text bold>{title}</Text> : null}
      {snap.phases.map((p, i) => (
        <Text key={`${i}-${p.name}`}>
          {p.status === "running" ? <Spinner /> : p.status === "done" ? <Text color="green">✓</Text> : <Text color="red">✗</Text>} {p.name}
          {p.ms !== undefined && p.status === "done" ? <Text dimColor> ({formatMs(p.ms)})</Text> : null}
          {p.status === "failed" ? <Text color="red"> failed</Text> : null}
        </Text>
      ))}
      {snap.lines.map((l, i) =>
        l.level === "warn" ? (
          <Text key={i} color="yellow">
            {"  "}warning: {l.text}
          </Text>
        ) : (
          <Text key={i} dimColor>
            {"  "}
            {l.text}
          </Text>
        ),
      )}
      {failure ? (
        <Box marginTop={1}>
          <ErrorBox error={failure} title={failed ? `${failed.name} failed:` : running ? "failed:" : "error:"} />
        </Box>
      ) : null}
    </Box>
  );
}

/**
 * `spuff up` in a terminal: the same Progress (plus `finish`, `fail`, `timings`) as PlainProgress, drawn with Ink on
 * stderr. `close()` unmounts it; the last frame stays on screen. After `close()`, messages go to plain stderr.
 */
export class InkProgress extends ProgressModel {
  private instance?: ReturnType<typeof render>;

  constructor(
    private readonly app: App,
    title: string,
  ) {
    super();
    this.instance = render(<ProgressView model={this} title={title} />, {
      stdout: app.io.stderr as NodeJS.WriteStream,
      stdin: app.io.stdin as NodeJS.ReadStream,
      exitOnCtrlC: false,
      patchConsole: false,
    });
  }

  override info(message: string): void {
    if (this.instance) super.info(message);
    else this.app.info(`  ${message}`);
  }

  override warn(message: string): void {
    if (this.instance) super.warn(message);
    else this.app.warn(message);
  }

  /** Unmounts the view; a phase still running then (an error ended the command) is marked failed. */
  close(): void {
    this.fail();
    this.instance?.unmount();
    this.instance = undefined;
  }
}

export function startInkProgress(app: App, title: string): InkProgress {
  return new InkProgress(app, title);
}
