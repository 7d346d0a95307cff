import { Box, Text } from "ink";
import { type ReactNode, useCallback, useEffect, useRef, useState } from "react";
import type { Progress } from "../core/provider.js";
import { describeUnsaved } from "../core/unsaved.js";
import { formatDuration, formatMoney, statusText, type VmView } from "../core/view.js";
import { WARN_BEFORE_SECONDS, type WorkspaceView } from "../core/workspace.js";
import { deletedIn, layout, row, WORKSPACE_COLUMNS, WORKSPACE_DROP_ORDER } from "./columns.js";
import { type ErrorInfo, errorInfo } from "./model.js";
import type { DestroyCheck, PickerInventory, TuiServices } from "./services.js";
import { ErrorBox, Keys, Spinner, TextInput, useKeys, useRefState, useTerminalSize } from "./widgets.js";

export type PickerAction = { kind: "shell"; vm: VmView } | { kind: "new" } | { kind: "up"; workspace: WorkspaceView } | { kind: "quit" };

/** A one-line message under the table: what the last action did, or why it failed; `detail` lines wrap under it. */
export interface Flash {
  level: "info" | "error";
  text: string;
  detail?: string[];
  error?: ErrorInfo;
}

type Mode =
  | { kind: "normal" }
  | { kind: "filter"; text: string }
  /** Destroy a VM: `check` (what it would lose) is undefined while the provider and the VM are asked. */
  | { kind: "confirm"; vm: VmView; check?: DestroyCheck; abort: AbortController }
  /** Destroy a VM and delete its workspace volume: the second question. */
  | { kind: "purge"; vm: VmView; workspace: WorkspaceView }
  /** Delete a kept workspace. */
  | { kind: "delete"; workspace: WorkspaceView }
  | { kind: "extend"; vm: VmView; text: string }
  | { kind: "help" }
  | { kind: "busy"; text: string };

type Data = { status: "loading" } | { status: "ok"; inv: PickerInventory } | { status: "error"; error: ErrorInfo };

/** A row of the picker: a VM, or a kept workspace (a volume without a VM, waiting for the next `up` of its name). */
type Row = { kind: "vm"; vm: VmView } | { kind: "ws"; ws: WorkspaceView };

export interface PickerProps {
  services: TuiServices;
  onAction(action: PickerAction): void;
  /** Automatic refresh interval (default 5 s). */
  refreshMs?: number;
  flash?: Flash;
  width?: number;
  height?: number;
}

const keyOf = (r: Row) => (r.kind === "vm" ? `${r.vm.provider}/${r.vm.name}` : `workspace:${r.ws.provider}/${r.ws.id}`);

/** The picker's rows: every VM, then this machine's kept workspaces; with a filter, those that match it. */
function rowsOf(data: Data, needle: string): Row[] {
  if (data.status !== "ok") return [];
  const rows: Row[] = [
    ...data.inv.vms.map((vm): Row => ({ kind: "vm", vm })),
    ...keptOf(data.inv).map((ws): Row => ({ kind: "ws", ws })),
  ];
  if (!needle) return rows;
  const n = needle.toLowerCase();
  const fields = (r: Row) =>
    r.kind === "vm" ? [r.vm.name, r.vm.provider, statusText(r.vm), r.vm.location ?? "", r.vm.size ?? ""] : [r.ws.name, r.ws.provider, r.ws.location ?? "", "kept workspace"];
  return rows.filter((r) => fields(r).some((s) => s.toLowerCase().includes(n)));
}

/** This machine's workspace volumes that no VM has: the picker's workspace rows. */
const keptOf = (inv: PickerInventory) => inv.workspaces.filter((w) => w.status === "kept" && w.mine);

const size = (w: WorkspaceView) => `${w.sizeGiB} GiB${w.pricePerMonth ? `, ${formatMoney(w.pricePerMonth)}/month` : ""}`;

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
  ["d", "destroy the VM (asks y/N first, saying what is kept and what is lost)"],
  ["e", "extend its TTL by a duration such as 4h"],
  ["r", "refresh now (it also refreshes every few seconds)"],
  ["/", "filter by name, provider, status, location or size; esc clears"],
  ["?", "this help"],
  ["q esc", "quit"],
];

/** Keys on a kept workspace's row. */
const WORKSPACE_HELP: [string, string][] = [
  ["u", "up: a new VM of that name on its provider, with the workspace attached (~/work as it was)"],
  ["d", "delete the workspace volume for good (asks y/N first)"],
];

/**
 * The VM picker: every spuff VM of the configured providers, with keys to connect, create, destroy and extend, and
 * this machine's kept workspaces below them, with keys to bring one back (up) or delete it.
 */
export function Picker(props: PickerProps) {
  const { services, onAction } = props;
  const { width, height } = useTerminalSize(props.width, props.height);
  const [data, setData, dataRef] = useRefState<Data>({ status: "loading" });
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
      const m = modeRef.current;
      if (m.kind === "confirm") m.abort.abort();
    },
    [modeRef],
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
  }, [services, setData]);

  useEffect(() => {
    void refresh();
    const t = setInterval(() => void refresh(), props.refreshMs ?? 5000);
    return () => clearInterval(t);
  }, [refresh, props.refreshMs]);

  const all = data.status === "ok" ? data.inv.vms : [];
  const kept = data.status === "ok" ? keptOf(data.inv) : [];
  const needle = mode.kind === "filter" ? mode.text : filter;
  const rows = rowsOf(data, needle);
  const index = Math.max(0, rows.findIndex((r) => keyOf(r) === selected));
  const current: Row | undefined = rows[index];

  // Key handlers read the refs: several keys may arrive before the next render.
  const now = () => {
    const list = rowsOf(dataRef.current, filterRef.current);
    const at = Math.max(0, list.findIndex((r) => keyOf(r) === selectedRef.current));
    return { list, at, row: list[at] as Row | undefined };
  };
  const move = (delta: number) => {
    const { list, at } = now();
    if (!list.length) return;
    setSelected(keyOf(list[Math.min(list.length - 1, Math.max(0, at + delta))]));
  };

  const run = async (text: string, fn: () => Promise<string | Omit<Flash, "level">>) => {
    setMode({ kind: "busy", text });
    try {
      const done = await fn();
      if (mounted.current) setFlash({ level: "info", ...(typeof done === "string" ? { text: done } : done) });
    } catch (err) {
      const error = errorInfo(err);
      if (mounted.current) setFlash({ level: "error", text: error.message, error });
    }
    if (!mounted.current) return;
    setMode({ kind: "normal" });
    await refresh();
  };

  const destroy = (vm: VmView, purge = false) =>
    run(`destroying ${vm.name}${purge ? " and its workspace volume" : ""}…`, async () => {
      const lines: string[] = [];
      const progress: Progress = { phase: () => {}, info: (m) => lines.push(m), warn: (m) => lines.push(`warning: ${m}`) };
      const r = await services.destroy(vm, progress, { purge });
      const text = `${r.destroyed ? "destroyed" : "forgot (already gone)"} ${r.name}${r.cost ? ` (cost ${formatMoney(r.cost)})` : ""}`;
      const w = r.workspace;
      if (!w) return text;
      if (w.action === "deleted") return `${text}; deleted its workspace volume ${w.id}`;
      const price = w.pricePerMonth ? `, ${formatMoney(w.pricePerMonth)}/month` : "";
      const days = w.keepSeconds !== null ? `; it is deleted ${Math.round(w.keepSeconds / 86400)} days from now unless a VM attaches it again` : "";
      return {
        text,
        detail: [
          `kept the workspace volume ${w.id} (${w.sizeGiB} GiB${price}): u on its row brings ~/work back with a new VM (\`spuff up ${r.name}\`), d deletes it (\`spuff down ${r.name} --purge\`)${days}`,
        ],
      };
    });

  /** The destroy dialog: first ask the provider and the VM what would be lost, then the question. */
  const confirmDestroy = (vm: VmView) => {
    const abort = new AbortController();
    const asking: Mode = { kind: "confirm", vm, abort };
    setMode(asking);
    services.destroyCheck(vm, abort.signal).then(
      (check) => {
        if (mounted.current && modeRef.current === asking) setMode({ ...asking, check });
      },
      (err: unknown) => {
        const reason = errorInfo(err).message;
        if (mounted.current && modeRef.current === asking) setMode({ ...asking, check: { workspace: null, unsaved: { checked: false, reason, repos: [] } } });
      },
    );
  };

  const deleteWs = (ws: WorkspaceView) =>
    run(`deleting the workspace volume ${ws.id} of ${ws.name}…`, async () => {
      const progress: Progress = { phase: () => {}, info: () => {}, warn: () => {} };
      await services.deleteWorkspace(ws, progress);
      return `deleted the workspace volume ${ws.id} of ${ws.name} (${ws.provider})`;
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

  const nothing = (text: string) => {
    setMode({ kind: "normal" });
    setFlash({ level: "info", text });
  };

  useKeys((input, key) => {
    const mode = modeRef.current;
    if (mode.kind === "busy" || mode.kind === "filter" || mode.kind === "extend") return;
    if (mode.kind === "help") {
      setMode({ kind: "normal" });
      return;
    }
    if (mode.kind === "confirm") {
      const yes = input === "y" || input === "Y";
      // No answer before the dialog can say what would be lost.
      if (!mode.check && yes) return;
      if (yes) void destroy(mode.vm);
      else if (input === "p" && mode.check?.workspace) setMode({ kind: "purge", vm: mode.vm, workspace: mode.check.workspace });
      else {
        mode.abort.abort();
        nothing("nothing destroyed");
      }
      return;
    }
    if (mode.kind === "purge") {
      if (input === "y" || input === "Y") void destroy(mode.vm, true);
      else nothing("nothing destroyed");
      return;
    }
    if (mode.kind === "delete") {
      if (input === "y" || input === "Y") void deleteWs(mode.workspace);
      else nothing("nothing deleted");
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
    const current = now().row;
    if (!current) return;
    if (current.kind === "ws") {
      const ws = current.ws;
      if (input === "u") return onAction({ kind: "up", workspace: ws });
      if (input === "d") return setMode({ kind: "delete", workspace: ws });
      if (key.return || input === "s" || input === "e") {
        const message = `${ws.name} is a kept workspace: it has no VM${key.return ? " to open a shell on" : ""}`;
        setFlash({ level: "error", text: message, error: { message, notes: [], hints: [`press u to bring it back with a new VM (\`spuff up ${ws.name}\`), d to delete it`] } });
      }
      return;
    }
    const vm = current.vm;
    if (key.return) {
      if (vm.status !== "running") {
        const message = `${vm.name} is ${statusText(vm)}: there is no shell to open`;
        const stopped = vm.status === "stopped" || vm.status === "idle-stopped";
        const hint = stopped && !vm.reap ? "press s to start it again with its disk" : vm.reap ? "`spuff reap` removes it; press n for a new VM" : "wait until it runs (r refreshes)";
        setFlash({ level: "error", text: message, error: { message, notes: [], hints: [hint] } });
        return;
      }
      onAction({ kind: "shell", vm });
      return;
    }
    if (input === "s") return void start(vm);
    if (input === "d") return confirmDestroy(vm);
    if (input === "e") return setMode({ kind: "extend", vm, text: "" });
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
        <Text bold>on a kept workspace (a volume with ~/work, kept when its VM went)</Text>
        {WORKSPACE_HELP.map(([k, text]) => (
          <Text key={`ws-${k}`}>
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
        · {data.status === "ok" ? `${all.length} VM${all.length === 1 ? "" : "s"}` : "VMs"}
        {kept.length ? ` · ${kept.length} kept workspace${kept.length === 1 ? "" : "s"}` : ""} · {scope.join(", ")}
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
  } else if (all.length === 0 && kept.length === 0) {
    body = <Text>no VMs — press n to create one</Text>;
  } else if (rows.length === 0) {
    body = <Text>no VM matches "{needle}" — esc clears the filter</Text>;
  } else {
    const vmRows = rows.flatMap((r) => (r.kind === "vm" ? [r.vm] : []));
    const wsRows = rows.flatMap((r) => (r.kind === "ws" ? [r.ws] : []));
    // Title, header, messages and the key legend take about 6 lines (the workspaces' header and the line above it 2
    // more); the rows scroll around the selection.
    const room = Math.max(3, height - 7 - (wsRows.length ? 2 : 0) - (all.length ? 0 : 1));
    const first = Math.min(Math.max(0, index - room + 1), Math.max(0, rows.length - room));
    const shown = rows.slice(first, first + room);
    const isSel = (r: Row) => current !== undefined && keyOf(r) === keyOf(current);
    const vmLayout = layout(vmRows, width);
    const wsLayout = layout(wsRows, width, WORKSPACE_COLUMNS, WORKSPACE_DROP_ORDER);
    const shownVms = shown.filter((r) => r.kind === "vm");
    const shownWs = shown.filter((r) => r.kind === "ws");
    body = (
      <Box flexDirection="column">
        {all.length === 0 ? <Text>no VMs — press n to create one, or u to bring a kept workspace back</Text> : null}
        {shownVms.length ? <Text bold>{`  ${row(vmLayout.columns.map((c) => c.header), vmLayout)}`}</Text> : null}
        {shownVms.map((r) => {
          const v = (r as Extract<Row, { kind: "vm" }>).vm;
          const l = vmLayout;
          const cells = l.columns.map((c) => c.cell(v));
          const statusAt = l.columns.findIndex((c) => c.header === "STATUS");
          const text = row(cells, l);
          // Colour the status cell: every column but the last (never STATUS) is padded to its width.
          const start = l.widths.slice(0, statusAt).reduce((a, b) => a + b, 0) + 2 * statusAt;
          const status = text.slice(start, start + l.widths[statusAt]);
          return (
            <Text key={keyOf(r)} inverse={isSel(r)} wrap="truncate">
              {isSel(r) ? "› " : "  "}
              {text.slice(0, start)}
              <Text color={STATUS_COLOR[v.status]}>{status}</Text>
              {text.slice(start + l.widths[statusAt])}
            </Text>
          );
        })}
        {shownWs.length ? (
          <Box marginTop={shownVms.length ? 1 : 0}>
            <Text bold>{`  ${row(wsLayout.columns.map((c) => c.header), wsLayout)}`}</Text>
          </Box>
        ) : null}
        {shownWs.map((r) => {
          const w = (r as Extract<Row, { kind: "ws" }>).ws;
          const text = row(wsLayout.columns.map((c) => c.cell(w)), wsLayout);
          // DELETED IN is the last column, right-aligned: yellow within three days, red once due.
          const last = wsLayout.widths[wsLayout.widths.length - 1];
          const soon = w.deleteInSeconds !== null && w.deleteInSeconds < WARN_BEFORE_SECONDS;
          return (
            <Text key={keyOf(r)} inverse={isSel(r)} wrap="truncate">
              {isSel(r) ? "› " : "  "}
              {text.slice(0, text.length - last)}
              <Text color={soon ? (deletedIn(w) === "due" ? "red" : "yellow") : undefined}>{text.slice(text.length - last)}</Text>
            </Text>
          );
        })}
        {rows.length > shown.length ? <Text dimColor>{`  ${first + 1}-${first + shown.length} of ${rows.length}`}</Text> : null}
      </Box>
    );
  }

  const reap = all.filter((v) => v.reap && v.mine);
  const theirs = all.filter((v) => v.reap && !v.mine);
  const ending = kept.filter((w) => w.deleteInSeconds !== null && w.deleteInSeconds < WARN_BEFORE_SECONDS);
  const errors = data.status === "ok" ? data.inv.errors : [];
  return (
    <Box flexDirection="column" width={width}>
      {title}
      {body}
      {errors.map((e, i) => (
        <Text key={`${e.provider}-${i}`} color="yellow" wrap="truncate">
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
      {ending.map((w) => (
        <Text key={`ending-${w.provider}-${w.id}`} color="yellow" wrap="truncate">
          {w.deleteInSeconds !== null && w.deleteInSeconds <= 0
            ? `the kept workspace of ${w.name} is past its keep period: the next \`spuff reap\` deletes it (u brings it back and keeps it)`
            : `the kept workspace of ${w.name} is deleted in ${deletedIn(w)}: u brings it back and keeps it`}
        </Text>
      ))}
      <Footer mode={mode} setMode={setMode} filter={filter} setFilter={setFilter} flash={flash} width={width} extend={extend} row={current} />
    </Box>
  );
}

/** What the destroy dialog says about the VM's work: kept on its volume, or what the check found on its disk. */
function WorkLines({ check }: { check?: DestroyCheck }) {
  if (!check) {
    return (
      <Text>
        <Spinner /> looking for its workspace volume and for unsaved git work on it… <Text dimColor>(any key but y cancels)</Text>
      </Text>
    );
  }
  const w = check.workspace;
  if (w) {
    return (
      <Box flexDirection="column">
        <Text color="green">
          Its workspace volume {w.id} ({size(w)}) is kept: ~/work comes back with the next `spuff up {w.name}`.
        </Text>
        <Text dimColor>Later, d on its row deletes it (`spuff down {w.name} --purge`).</Text>
      </Box>
    );
  }
  const lines: ReactNode[] = [];
  if (check.volumeError) lines.push(<Text key="vol" color="yellow">could not list its workspace volumes: {check.volumeError}</Text>);
  const u = check.unsaved;
  if (!u) {
    lines.push(
      <Text key="none" color="yellow">
        It has no workspace volume: what is on its disk goes with it (not checked for unsaved git work: {check.skipped ?? "not asked"}).
      </Text>,
    );
  } else if (!u.checked) {
    lines.push(
      <Text key="fail" color="red">
        It has no workspace volume, and spuff could not check it for unsaved git work: {u.reason ?? "no reason given"}
      </Text>,
    );
  } else if (u.repos.length) {
    lines.push(
      <Text key="lost" color="red" bold>
        It has no workspace volume, and this work exists nowhere else:
      </Text>,
      ...u.repos.map((r) => (
        <Text key={`r-${r.path}`} color="red">
          {"  "}
          {describeUnsaved(r)}
        </Text>
      )),
    );
  } else {
    lines.push(
      <Text key="clean" dimColor>
        It has no workspace volume; no uncommitted changes, unpushed commits or stashes were found in its git work trees.
      </Text>,
    );
  }
  return <Box flexDirection="column">{lines}</Box>;
}

function Footer(props: {
  mode: Mode;
  setMode(m: Mode): void;
  filter: string;
  setFilter(f: string): void;
  flash?: Flash;
  width: number;
  extend(vm: VmView, by: string): Promise<void>;
  row?: Row;
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
    const lost = mode.check && !mode.check.workspace && mode.check.unsaved?.repos.length;
    return (
      <Box borderStyle="round" borderColor="red" paddingX={1} flexDirection="column">
        <Text>
          Destroy <Text bold>{v.name}</Text> ({where}{v.id && v.id !== v.name ? `, id ${v.id}` : ""})? This deletes the VM and its disk{lost ? ", and the unsaved work below" : ""}.
        </Text>
        {v.mine ? null : (
          <Text color="red">
            It is not this machine's: it belongs to owner <Text bold>{v.owner ?? "unknown"}</Text>.
          </Text>
        )}
        <WorkLines check={mode.check} />
        {mode.check ? (
          <Text>
            <Text bold>y</Text> destroy{mode.check.workspace ? " (the volume is kept)" : ""}
            {mode.check.workspace ? (
              <>
                {" · "}
                <Text bold>p</Text> destroy and delete the volume
              </>
            ) : null}{" "}
            · any other key keeps it <Text dimColor>[y/N]</Text>
          </Text>
        ) : null}
      </Box>
    );
  }
  if (mode.kind === "purge") {
    const w = mode.workspace;
    return (
      <Box borderStyle="round" borderColor="red" paddingX={1} flexDirection="column">
        <Text>
          Destroy <Text bold>{mode.vm.name}</Text> and delete its workspace volume {w.id} ({size(w)})? Its work is gone for good.
        </Text>
        <Text>
          <Text bold>y</Text> destroy both · any other key keeps both <Text dimColor>[y/N]</Text>
        </Text>
      </Box>
    );
  }
  if (mode.kind === "delete") {
    const w = mode.workspace;
    return (
      <Box borderStyle="round" borderColor="red" paddingX={1} flexDirection="column">
        <Text>
          Delete the kept workspace of <Text bold>{w.name}</Text> ({w.provider} volume {w.id}, {size(w)})? Its work is gone for good.
        </Text>
        <Text>
          <Text bold>y</Text> delete · any other key keeps it <Text dimColor>[y/N]</Text>
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
  const keys: [string, string][] =
    props.row?.kind === "ws"
      ? [
          ["↑↓", "move"],
          ["u", "up"],
          ["d", "delete"],
          ["n", "new"],
          ["r", "refresh"],
          ["/", "filter"],
          ["?", "help"],
          ["q", "quit"],
        ]
      : [
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
        ];
  return (
    <Box flexDirection="column">
      {props.flash ? (
        props.flash.level === "error" && props.flash.error ? (
          <ErrorBox error={props.flash.error} />
        ) : (
          <>
            <Text color={props.flash.level === "error" ? "red" : "green"} wrap="truncate">
              {props.flash.text}
            </Text>
            {(props.flash.detail ?? []).map((d, i) => (
              <Text key={`d${i}`}>{d}</Text>
            ))}
          </>
        )
      ) : null}
      <Keys width={props.width} keys={keys} />
    </Box>
  );
}
