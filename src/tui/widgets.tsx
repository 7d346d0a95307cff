import { Box, type Key, Text, useInput, useStdout } from "ink";
import { createContext, type ReactNode, useCallback, useContext, useEffect, useRef, useState } from "react";
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

type KeyHandler = (input: string, key: Key) => void;
/** The app's one key listener: who gets keys now, and whether a state change is waiting to be drawn. */
interface KeyBox {
  handler?: KeyHandler;
  /** Set by useRefState when its value changes, cleared when a useKeys component renders. */
  pending: boolean;
}
const KeysContext = createContext<KeyBox | undefined>(undefined);

/** How many event-loop turns a key waits for the render a state change asked for (a bound, never a timing). */
const MAX_WAIT_TURNS = 200;

/**
 * One input listener for the whole app. The component that renders last with `useKeys` active gets the keys; it
 * takes them over while it renders, so a key pressed right after a new screen or prompt appeared already reaches it
 * (Ink's own useInput subscribes only after the frame was drawn).
 */
export function KeyRoot({ children }: { children: ReactNode }) {
  const box = useRef<KeyBox>({ pending: false }).current;
  const queue = useRef<Array<[string, Key]>>([]).current;
  useInput((input, key) => {
    const busy = queue.length > 0;
    queue.push(...splitKeys(input, key));
    if (busy) return;
    // One key at a time; the next only after React has drawn what the one before changed, so "/" followed by text in
    // one chunk types the text into the filter that "/" opened.
    let waited = 0;
    const next = () => {
      if (box.pending && waited++ < MAX_WAIT_TURNS) return void setImmediate(next);
      waited = 0;
      const k = queue.shift();
      if (!k) return;
      box.handler?.(...k);
      if (queue.length) setImmediate(next);
    };
    next();
  });
  return <KeysContext.Provider value={box}>{children}</KeysContext.Provider>;
}

/**
 * Ink hands a run of plain characters over as one input ("jj", or a pasted "name\r"). Split such a run into one key
 * each, so every key counts and an enter inside it is an enter.
 */
export function splitKeys(input: string, key: Key): Array<[string, Key]> {
  const chars = Array.from(input);
  if (chars.length < 2 || key.ctrl || key.meta) return [[input, key]];
  const plain = Object.fromEntries(Object.entries(key).map(([k, v]) => [k, typeof v === "boolean" ? false : v])) as Key;
  return chars.map((c): [string, Key] => {
    if (c === "\r" || c === "\n") return ["", { ...plain, return: true }];
    if (c === "\x7f" || c === "\b") return ["", { ...plain, backspace: true }];
    if (c === "\t") return ["", { ...plain, tab: true }];
    const code = c.charCodeAt(0);
    if (code >= 1 && code <= 26) return [String.fromCharCode(code + 96), { ...plain, ctrl: true }];
    return [c, { ...plain, shift: /[A-Z]/.test(c) }];
  });
}

/** Receive keys while `active` (see KeyRoot); without a KeyRoot, Ink's useInput. */
export function useKeys(handler: KeyHandler, active = true): void {
  const box = useContext(KeysContext);
  if (box && active) {
    box.handler = handler;
    box.pending = false;
  }
  useInput(handler, { isActive: active && !box });
}

/**
 * State whose latest value is readable at once through the returned ref. Several keys can arrive in one chunk
 * ("j" and enter, or a pasted name and enter); Ink calls the input handler for each before React re-renders, so
 * handlers must read the ref, not the rendered value.
 */
export function useRefState<T>(initial: T | (() => T)): [T, (next: T | ((prev: T) => T)) => void, { readonly current: T }] {
  const [value, setValue] = useState(initial);
  const ref = useRef(value);
  const keys = useContext(KeysContext);
  const set = useCallback(
    (next: T | ((prev: T) => T)) => {
      const value = typeof next === "function" ? (next as (prev: T) => T)(ref.current) : next;
      if (keys && !Object.is(value, ref.current)) keys.pending = true;
      ref.current = value;
      setValue(value);
    },
    [keys],
  );
  return [value, set, ref];
}

/** A one-line text field: printable keys type, backspace deletes, enter submits, esc cancels. */
export function TextInput(props: { value: string; onChange(v: string): void; onSubmit(v: string): void; onCancel(): void; placeholder?: string }) {
  // The field owns its text from the moment it is shown (`value` is the starting text): the latest text is in a ref,
  // also between renders (a pasted name and enter arrive together), and a render of the parent with an older value
  // cannot take typed characters back.
  const [text, setText, latest] = useRefState(props.value);
  const change = (v: string) => {
    setText(v);
    props.onChange(v);
  };
  useKeys((input, key) => {
    if (key.return) props.onSubmit(latest.current);
    else if (key.escape) props.onCancel();
    else if (key.backspace || key.delete) change(latest.current.slice(0, -1));
    else if (key.ctrl && input === "u") change("");
    else if (!key.ctrl && !key.meta && input && !/[\u0000-\u001f]/.test(input)) change(latest.current + input);
  });
  return (
    <Text>
      {text}
      <Text inverse> </Text>
      {!text && props.placeholder ? <Text dimColor> {props.placeholder}</Text> : null}
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
