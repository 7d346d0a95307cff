import { Box, Text } from "ink";
import { type ReactNode, useCallback, useEffect, useRef, useState } from "react";
import type { Inventory } from "../core/inventory.js";
import type { Progress } from "../core/provider.js";
import { formatDuration, formatMoney, statusText, type VmView } from "../core/view.js";
import { layout, row } from "./columns.js";
import { type ErrorInfo, errorInfo } from "./model.js";
import type { TuiServices } from "./services.js";
import { ErrorBox, Keys, Spinner, TextInput, useKeys, useRefState, useTerminalSize } from "./widgets.js";

export type PickerAction = { kind: "shell"; vm: VmView } | { kind: "new" } | { kind: "quit" };

/** A one-line message under the table: what the last action did, or why it failed. */
export interface Flash {
  level: "info" | "error";
  text: string;
  error?: ErrorInfo;
}

type Mode =
  | { kind: "normal" }
  | { kind: "filter"; text: string }
  | { kind: "confirm"; vm: VmView }
  | { kind: "extend"; vm: VmView; text: string }
  | { kind: "help" }
  | { kind: "busy"; text: string };

type Data = { status: "loading" } | { status: "ok"; inv: Inventory } | { status: "error"; error: ErrorInfo };

export interface PickerProps {
  services: TuiServices;
  onAction(action: PickerAction): void;
  /** Automatic refresh interval (default 5 s). */
  refreshMs?: number;
  flash?: Flash;
  width?: number;
  height?: number;
}

const keyOf = (v: VmView) => `${v.provider}/${v.name}`;

function matching(vms: VmView[], needle: string): VmView[] {
  if (!needle) return vms;
  const n = needle.toLowerCase();
  return vms.filter((v) => [v.name, v.provider, statusText(v), v.location ?? "", v.size ?? ""].some((s) => s.toLowerCase().includes(n)));
}

const STATUS_COLOR: Record<string, string> = {
  running: "green",
  creating: "cyan",
  stopping: "yellow",
  stopped: "yellow",
  "idle-stopped": "yellow",
  deleting: "yellow",
  gone: "red",
};

const HELP: [string, string][] = [
  ["↑/↓ j/k", "move the selection"],
  ["enter", "open a shell on the VM (spuff ssh NAME); the list comes back when it exits"],
  ["n", "new VM: provider, location, size, name, summary, create"],
  ["s", "start a stopped VM again with its disk (spuff start NAME)"],
  ["d", "destroy the VM (asks y/N first)"],
  ["e", "extend its TTL by a duration such as 4h"],
  ["r", "refresh now (it also refreshes every few seconds)"],
  ["/", "filter by name, provider, status, location or size; esc clears"],
  ["?", "this help"],
  ["q esc", "quit"],
];

/** The VM picker: every spuff VM of the configured providers, with keys to connect, create, destroy and extend. */
export function Picker(props: PickerProps) {
  const { services, onAction } = props;
  const { width, height } = useTerminalSize(props.width, props.height);
  const [data, setData] = useState<Data>({ status: "loading" });
  const [refreshing, setRefreshing] = useState(false);
  const [selected, setSelected, selectedRef] = useRefState<string | undefined>(undefined);
  const [filter, setFilter, filterRef] = useRefState("");
  const [mode, setMode, modeRef] = useRefState<Mode>({ kind: "normal" });
  const [flash, setFlash] = useState<Flash | undefined>(props.flash);
  const inFlight = useRef(false);
  const mounted = useRef(true);
  useEffect(
    () => () => {
      mounted.current = false;
    },
    [],
  );

  const refresh = useCallback(async () => {
    if (inFlight.current) return;
    inFlight.current = true;
    setRefreshing(true);
    try {
      const inv = await services.list();
      if (mounted.current) setData({ status: "ok", inv });
    } catch (err) {
      if (mounted.current) setData({ status: "error", error: errorInfo(err) });
    } finally {
      inFlight.current = false;
      if (mounted.current) setRefreshing(false);
    }
  }, [services]);

  useEffect(() => {
    void refresh();
    const t = setInterval(() => void refresh(), props.refreshMs ?? 5000);
    return () => clearInterval(t);
  }, [refresh, props.refreshMs]);

  const all = data.status === "ok" ? data.inv.vms : [];
  const needle = mode.kind === "filter" ? mode.text : filter;
  const vms = matching(all, needle);
  const index = Math.max(0, vms.findIndex((v) => keyOf(v) === selected));
  const current: VmView | undefined = vms[index];

  // Key handlers read the refs: several keys may arrive before the next render.
  const now = () => {
    const list = matching(all, filterRef.current);
    const at = Math.max(0, list.findIndex((v) => keyOf(v) === selectedRef.current));
    return { list, at, vm: list[at] as VmView | undefined };
  };
  const move = (delta: number) => {
    const { list, at } = now();
    if (!list.length) return;
    setSelected(keyOf(list[Math.min(list.length - 1, Math.max(0, at + delta))]));
  };

  const run = async (text: string, fn: () => Promise<string>) => {
    setMode({ kind: "busy", text });
    try {
      const done = await fn();
      if (mounted.current) setFlash({ level: "info", text: done });
    } catch (err) {
      const error = errorInfo(err);
      if (mounted.current) setFlash({ level: "error", text: error.message, error });
    }
    if (!mounted.current) return;
    setMode({ kind: "normal" });
    await refresh();
  };

  const destroy = (vm: VmView) =>
    run(`destroying ${vm.name}…`, async () => {
      const lines: string[] = [];
      const progress: Progress = { phase: () => {}, info: (m) => lines.push(m), warn: (m) => lines.push(`warning: ${m}`) };
      const r = await services.destroy(vm, progress);
      return `${r.destroyed ? "destroyed" : "forgot (already gone)"} ${r.name}${r.cost ? ` (cost ${formatMoney(r.cost)})` : ""}`;
    });

  const start = (vm: VmView) =>
    run(`starting ${vm.name}… (booting, then waiting for SSH)`, async () => {
      const progress: Progress = { phase: () => {}, info: () => {}, warn: () => {} };
      const r = await services.start(vm, progress);
      return r.alreadyRunning ? `${vm.name} is already running` : `${vm.name} is running again (${r.view.address ?? "no address"}): enter opens a shell`;
    });

  const extend = (vm: VmView, by: string) =>
    run(`extending ${vm.name} by ${by}…`, async () => {
      const at = await services.extend(vm, by);
      const left = Math.floor((at.getTime() - Date.now()) / 1000);
      return `${vm.name} now expires at ${at.toISOString().slice(0, 16).replace("T", " ")} UTC (in ${formatDuration(left)})`;
    });

  useKeys((input, key) => {
    const mode = modeRef.current;
    if (mode.kind === "busy" || mode.kind === "filter" || mode.kind === "extend") return;
    if (mode.kind === "help") {
      setMode({ kind: "normal" });
      return;
    }
    if (mode.kind === "confirm") {
      if (input === "y" || input === "Y") void destroy(mode.vm);
      else {
        setMode({ kind: "normal" });
        setFlash({ level: "info", text: "nothing destroyed" });
      }
      return;
    }
    if (key.ctrl && input === "c") return onAction({ kind: "quit" });
    if (key.upArrow || input === "k") return move(-1);
    if (key.downArrow || input === "j") return move(1);
    if (key.pageUp) return move(-10);
    if (key.pageDown) return move(10);
    if (input === "q") return onAction({ kind: "quit" });
    if (key.escape) {
      if (filterRef.current) setFilter("");
      else onAction({ kind: "quit" });
      return;
    }
    if (input === "n") return onAction({ kind: "new" });
    if (input === "r") {
      setFlash(undefined);
      void refresh();
      return;
    }
    if (input === "/") return setMode({ kind: "filter", text: filterRef.current });
    if (input === "?") return setMode({ kind: "help" });
    const current = now().vm;
    if (!current) return;
    if (key.return) {
      if (current.status !== "running") {
        const message = `${current.name} is ${statusText(current)}: there is no shell to open`;
        const stopped = current.status === "stopped" || current.status === "idle-stopped";
        const hint = stopped && !current.reap ? "press s to start it again with its disk" : current.reap ? "`spuff reap` removes it; press n for a new VM" : "wait until it runs (r refreshes)";
        setFlash({ level: "error", text: message, error: { message, notes: [], hints: [hint] } });
        return;
      }
      onAction({ kind: "shell", vm: current });
      return;
    }
    if (input === "s") return void start(current);
    if (input === "d") return setMode({ kind: "confirm", vm: current });
    if (input === "e") return setMode({ kind: "extend", vm: current, text: "" });
  });

  if (mode.kind === "help") {
    return (
      <Box flexDirection="column">
        <Text bold>spuff — keys</Text>
        {HELP.map(([k, text]) => (
          <Text key={k}>
            <Text bold color="cyan">
              {k.padEnd(9)}
            </Text>
            {text}
          </Text>
        ))}
        <Text dimColor>Narrow terminals drop columns in this order: ADDRESS, AGE, LOCATION, SIZE, PRICE/H, PROVIDER, COST.</Text>
        <Text dimColor>Press any key to go back.</Text>
      </Box>
    );
  }

  const scope = services.scope();
  const title = (
    <Text>
      <Text bold>spuff</Text>
      <Text dimColor>
        {" "}
        · {data.status === "ok" ? `${all.length} VM${all.length === 1 ? "" : "s"}` : "VMs"} · {scope.join(", ")}
        {needle ? ` · filter "${needle}"` : ""}
      </Text>
      {refreshing && data.status !== "loading" ? (
        <Text>
          {" "}
          <Spinner />
        </Text>
      ) : null}
    </Text>
  );

  let body: ReactNode;
  if (data.status === "loading") {
    body = (
      <Text>
        <Spinner /> loading VMs from {scope.join(", ")}…
      </Text>
    );
  } else if (data.status === "error") {
    body = (
      <Box flexDirection="column">
        <ErrorBox error={data.error} title="cannot list VMs:" />
        <Text dimColor>r retries · n creates a VM with another provider · q quits</Text>
      </Box>
    );
  } else if (all.length === 0) {
    body = <Text>no VMs — press n to create one</Text>;
  } else if (vms.length === 0) {
    body = <Text>no VM matches "{needle}" — esc clears the filter</Text>;
  } else {
    const l = layout(vms, width);
    // Title, header, messages and the key legend take about 6 lines; the rows scroll around the selection.
    const room = Math.max(3, height - 7);
    const first = Math.min(Math.max(0, index - room + 1), Math.max(0, vms.length - room));
    const shown = vms.slice(first, first + room);
    body = (
      <Box flexDirection="column">
        <Text bold>{`  ${row(l.columns.map((c) => c.header), l)}`}</Text>
        {shown.map((v) => {
          const isSel = keyOf(v) === keyOf(current ?? v) && current !== undefined;
          const cells = l.columns.map((c) => c.cell(v));
          const statusAt = l.columns.findIndex((c) => c.header === "STATUS");
          const text = row(cells, l);
          // Colour the status cell: every column but the last (never STATUS) is padded to its width.
          const start = l.widths.slice(0, statusAt).reduce((a, b) => a + b, 0) + 2 * statusAt;
          const status = text.slice(start, start + l.widths[statusAt]);
          return (
            <Text key={keyOf(v)} inverse={isSel} wrap="truncate">
              {isSel ? "› " : "  "}
              {text.slice(0, start)}
              <Text color={STATUS_COLOR[v.status]}>{status}</Text>
              {text.slice(start + l.widths[statusAt])}
            </Text>
          );
        })}
        {vms.length > shown.length ? <Text dimColor>{`  ${first + 1}-${first + shown.length} of ${vms.length}`}</Text> : null}
      </Box>
    );
  }

  const reap = all.filter((v) => v.reap && v.mine);
  const theirs = all.filter((v) => v.reap && !v.mine);
  const errors = data.status === "ok" ? data.inv.errors : [];
  return (
    <Box flexDirection="column" width={width}>
      {title}
      {body}
      {errors.map((e) => (
        <Text key={e.provider} color="yellow" wrap="truncate">
          {e.provider}: {e.message}
        </Text>
      ))}
      {reap.length ? (
        <Text dimColor wrap="truncate">
          {reap.length} need{reap.length === 1 ? "s" : ""} reaping ({reap.map((v) => `${v.name}: ${v.reap}`).join(", ")}): `spuff reap`
        </Text>
      ) : null}
      {theirs.length ? (
        <Text dimColor wrap="truncate">
          {theirs.length} of other owners need{theirs.length === 1 ? "s" : ""} reaping ({theirs.map((v) => `${v.name}: ${v.reap}`).join(", ")}): `spuff reap --all-owners`
        </Text>
      ) : null}
      <Footer mode={mode} setMode={setMode} filter={filter} setFilter={setFilter} flash={flash} width={width} extend={extend} />
    </Box>
  );
}

function Footer(props: {
  mode: Mode;
  setMode(m: Mode): void;
  filter: string;
  setFilter(f: string): void;
  flash?: Flash;
  width: number;
  extend(vm: VmView, by: string): Promise<void>;
}) {
  const { mode, setMode } = props;
  if (mode.kind === "busy") {
    return (
      <Text>
        <Spinner /> {mode.text}
      </Text>
    );
  }
  if (mode.kind === "confirm") {
    const v = mode.vm;
    const where = [v.provider, v.location, v.size].filter(Boolean).join(", ");
    return (
      <Box borderStyle="round" borderColor="red" paddingX={1} flexDirection="column">
        <Text>
          Destroy <Text bold>{v.name}</Text> ({where}{v.id && v.id !== v.name ? `, id ${v.id}` : ""})? This deletes the VM and its disk.
        </Text>
        {v.mine ? null : (
          <Text color="red">
            It is not this machine's: it belongs to owner <Text bold>{v.owner ?? "unknown"}</Text>.
          </Text>
        )}
        <Text>
          <Text bold>y</Text> destroy · any other key keeps it <Text dimColor>[y/N]</Text>
        </Text>
      </Box>
    );
  }
  if (mode.kind === "filter") {
    return (
      <Text>
        <Text bold>/</Text>
        <TextInput
          value={mode.text}
          placeholder="name, provider, status, location or size"
          onChange={(text) => setMode({ kind: "filter", text })}
          onSubmit={(text) => {
            props.setFilter(text);
            setMode({ kind: "normal" });
          }}
          onCancel={() => {
            props.setFilter("");
            setMode({ kind: "normal" });
          }}
        />
      </Text>
    );
  }
  if (mode.kind === "extend") {
    return (
      <Box flexDirection="column">
        <Text>
          Extend the TTL of <Text bold>{mode.vm.name}</Text> (now {formatDuration(mode.vm.ttlSeconds)}) by:{" "}
          <TextInput
            value={mode.text}
            placeholder="e.g. 4h, 1h30m, 1d"
            onChange={(text) => setMode({ ...mode, text })}
            onSubmit={(text) => (text.trim() ? void props.extend(mode.vm, text.trim()) : setMode({ kind: "normal" }))}
            onCancel={() => setMode({ kind: "normal" })}
          />
        </Text>
        <Text dimColor>enter extends · esc cancels</Text>
      </Box>
    );
  }
  return (
    <Box flexDirection="column">
      {props.flash ? (
        props.flash.level === "error" && props.flash.error ? (
          <ErrorBox error={props.flash.error} />
        ) : (
          <Text color={props.flash.level === "error" ? "red" : "green"} wrap="truncate">
            {props.flash.text}
          </Text>
        )
      ) : null}
      <Keys
        width={props.width}
        keys={[
          ["↑↓", "move"],
          ["enter", "shell"],
          ["n", "new"],
          ["s", "start"],
          ["d", "destroy"],
          ["e", "extend"],
          ["r", "refresh"],
          ["/", "filter"],
          ["?", "help"],
          ["q", "quit"],
        ]}
      />
    </Box>
  );
}
