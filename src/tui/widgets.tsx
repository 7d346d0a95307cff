import { Box, Text, useInput, useStdout } from "ink";
import { useCallback, useEffect, useRef, useState } from "react";
import type { ErrorInfo } from "./model.js";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export function Spinner() {
  const [i, setI] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setI((n) => (n + 1) % FRAMES.length), 100);
    return () => clearInterval(t);
  }, []);
  return <Text color="cyan">{FRAMES[i]}</Text>;
}

/** The terminal's size, updated on resize; `width`/`height` props win (tests, fixed layouts). */
export function useTerminalSize(width?: number, height?: number): { width: number; height: number } {
  const { stdout } = useStdout();
  const [size, setSize] = useState({ width: stdout.columns || 80, height: stdout.rows || 24 });
  useEffect(() => {
    const onResize = () => setSize({ width: stdout.columns || 80, height: stdout.rows || 24 });
    stdout.on("resize", onResize);
    return () => {
      stdout.off("resize", onResize);
    };
  }, [stdout]);
  return { width: width ?? size.width, height: height ?? size.height };
}

/**
 * State whose latest value is readable at once through the returned ref. Several keys can arrive in one chunk
 * ("j" and enter, or a pasted name and enter); Ink calls the input handler for each before React re-renders, so
 * handlers must read the ref, not the rendered value.
 */
export function useRefState<T>(initial: T | (() => T)): [T, (next: T | ((prev: T) => T)) => void, { readonly current: T }] {
  const [value, setValue] = useState(initial);
  const ref = useRef(value);
  const set = useCallback((next: T | ((prev: T) => T)) => {
    ref.current = typeof next === "function" ? (next as (prev: T) => T)(ref.current) : next;
    setValue(ref.current);
  }, []);
  return [value, set, ref];
}

/** A one-line text field: printable keys type, backspace deletes, enter submits, esc cancels. */
export function TextInput(props: { value: string; onChange(v: string): void; onSubmit(v: string): void; onCancel(): void; placeholder?: string }) {
  // The latest text, also between renders (a pasted name and enter arrive together).
  const latest = useRef(props.value);
  latest.current = props.value;
  const change = (v: string) => {
    latest.current = v;
    props.onChange(v);
  };
  useInput((input, key) => {
    if (key.return) props.onSubmit(latest.current);
    else if (key.escape) props.onCancel();
    else if (key.backspace || key.delete) change(latest.current.slice(0, -1));
    else if (key.ctrl && input === "u") change("");
    else if (!key.ctrl && !key.meta && input && !/[\u0000-\u001f]/.test(input)) change(latest.current + input);
  });
  return (
    <Text>
      {props.value}
      <Text inverse> </Text>
      {!props.value && props.placeholder ? <Text dimColor> {props.placeholder}</Text> : null}
    </Text>
  );
}

/** An error with its notes and hints, the way the CLI prints it. */
export function ErrorBox({ error, title }: { error: ErrorInfo; title?: string }) {
  return (
    <Box flexDirection="column">
      <Text>
        <Text color="red" bold>
          {title ?? "error:"}
        </Text>{" "}
        {error.message}
      </Text>
      {error.notes.slice(0, 12).map((n, i) => (
        <Text key={`n${i}`} dimColor>
          {"  "}
          {n}
        </Text>
      ))}
      {error.hints.map((h, i) => (
        <Text key={`h${i}`}>
          <Text color="yellow">hint:</Text> {h}
        </Text>
      ))}
    </Box>
  );
}

/** A key legend: "key label" pairs separated by two spaces, cut to what fits. */
export function Keys({ keys, width }: { keys: [string, string][]; width: number }) {
  const parts: [string, string][] = [];
  let used = 0;
  for (const [k, label] of keys) {
    const len = k.length + 1 + label.length + (parts.length ? 2 : 0);
    if (used + len > width) break;
    parts.push([k, label]);
    used += len;
  }
  return (
    <Text>
      {parts.map(([k, label], i) => (
        <Text key={k}>
          {i ? "  " : ""}
          <Text bold color="cyan">
            {k}
          </Text>{" "}
          <Text dimColor>{label}</Text>
        </Text>
      ))}
    </Text>
  );
}
