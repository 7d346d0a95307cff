import { Box, Text } from "ink";
import { useEffect, useRef, useState } from "react";
import { NAME_RULE, randomName, validateName } from "../core/names.js";
import type { Catalog, CatalogSize } from "../core/provider.js";
import { formatMoney } from "../core/view.js";
import type { WorkspaceView } from "../core/workspace.js";
import { type ErrorInfo, errorInfo } from "./model.js";
import type { CreateRequest, ProviderChoice, TuiServices } from "./services.js";
import { ErrorBox, Keys, Spinner, TextInput, useKeys, useRefState, useTerminalSize } from "./widgets.js";

type Step =
  | { kind: "providers" }
  | { kind: "catalog" }
  | { kind: "location" }
  | { kind: "size" }
  | { kind: "name" }
  | { kind: "summary" };

export interface WizardProps {
  services: TuiServices;
  /**
   * Bring a kept workspace back: a new VM of its name on its provider, in its location (a volume attaches only where it
   * is); the wizard asks only for the size (providers with a catalog) and shows the summary.
   */
  workspace?: WorkspaceView;
  onCancel(): void;
  onCreate(req: CreateRequest): void;
  width?: number;
  height?: number;
}

/** A size's price where it would be created. */
export function priceIn(size: CatalogSize, location: string | undefined) {
  return size.prices.find((p) => p.location === location) ?? (location ? undefined : size.prices[0]);
}

/** What a VM costs at most until its TTL: hourly price × hours, never more than the monthly cap. */
export function estimate(hourly: number, ttlHours: number, monthly?: number): number {
  const byHours = hourly * Math.max(1, Math.ceil(ttlHours));
  return monthly !== undefined ? Math.min(byHours, monthly) : byHours;
}

/** The sizes to offer in `location`: those available there first, cheapest first; deprecated ones only where still sold. */
export function sizesFor(catalog: Catalog | undefined, location: string | undefined): CatalogSize[] {
  const here = (s: CatalogSize) => (location ? s.locations.includes(location) : false);
  const hourly = (s: CatalogSize) => priceIn(s, location)?.hourly ?? Number.POSITIVE_INFINITY;
  return (catalog?.sizes ?? [])
    .filter((s) => !s.deprecated || here(s))
    .sort((a, b) => Number(here(b)) - Number(here(a)) || hourly(a) - hourly(b) || a.name.localeCompare(b.name));
}

/** The summary's workspace line: the kept volume `up` attaches, or the new one it makes. */
function workText(
  work: "loading" | { kept?: WorkspaceView; sizeGiB: number } | { error: string },
  location: string | undefined,
  placed: boolean,
): string {
  if (work === "loading") return "looking for a kept workspace of this name…";
  if ("error" in work) return `could not look for a kept workspace: ${work.error}`;
  const k = work.kept;
  if (!k) return `a new ${work.sizeGiB} GiB workspace volume, kept by \`spuff down\` (--purge deletes it)`;
  const elsewhere = placed && k.location && location && k.location !== location;
  return elsewhere
    ? `its kept workspace volume ${k.id} is in ${k.location}, not ${location}: esc back to ${k.location} (or up is refused)`
    : `the kept workspace volume ${k.id} (${k.sizeGiB} GiB) is attached: the work is where it was`;
}

/** A vertical list with a cursor; `disabled` rows are shown dimmed and cannot be chosen. */
function List<T>(props: {
  items: T[];
  cursor: number;
  height: number;
  render(item: T, selected: boolean): string;
  disabled?(item: T): boolean;
}) {
  const room = Math.max(3, props.height);
  const first = Math.min(Math.max(0, props.cursor - room + 1), Math.max(0, props.items.length - room));
  return (
    <Box flexDirection="column">
      {props.items.slice(first, first + room).map((item, i) => {
        const sel = first + i === props.cursor;
        const off = props.disabled?.(item) ?? false;
        return (
          <Text key={first + i} inverse={sel} dimColor={off && !sel} wrap="truncate">
            {sel ? "› " : "  "}
            {props.render(item, sel)}
          </Text>
        );
      })}
      {props.items.length > room ? <Text dimColor>{`  ${first + 1}-${Math.min(first + room, props.items.length)} of ${props.items.length}`}</Text> : null}
    </Box>
  );
}

/** The create wizard: provider → location → size (providers with a catalog) → name → summary → create. */
export function Wizard(props: WizardProps) {
  const { services } = props;
  const { width, height } = useTerminalSize(props.width, props.height);
  // Refs alongside state: key handlers read the latest values (several keys can arrive in one chunk).
  const [step, setStep, stepRef] = useRefState<Step>({ kind: "providers" });
  const [providers, setProviders, providersRef] = useRefState<ProviderChoice[] | undefined>(undefined);
  const [provider, setProvider, providerRef] = useRefState<ProviderChoice | undefined>(undefined);
  const [catalog, setCatalog, catalogRef] = useRefState<Catalog | undefined>(undefined);
  const [location, setLocation, locationRef] = useRefState<string | undefined>(undefined);
  const [size, setSize, sizeRef] = useRefState<CatalogSize | undefined>(undefined);
  const fixed = props.workspace;
  const [name, setName, nameRef] = useRefState(() => fixed?.name ?? randomName());
  const [cursor, setCursor, cursorRef] = useRefState(0);
  const [error, setError] = useState<ErrorInfo | undefined>();
  const catalogLoad = useRef<AbortController | undefined>(undefined);
  // What the summary says about ~/work: "loading", what `up` will do, or why spuff could not look.
  const [work, setWork] = useState<"loading" | Awaited<ReturnType<TuiServices["workspaceFor"]>> | { error: string }>(() =>
    fixed ? { kept: fixed, sizeGiB: fixed.sizeGiB } : "loading",
  );

  // biome-ignore lint/correctness/useExhaustiveDependencies: once per mount; a kept workspace's wizard starts from its provider
  useEffect(() => {
    services.providers().then(
      (list) => {
        setProviders(list);
        if (!fixed) return;
        const p = list.find((p) => p.name === fixed.provider);
        if (p) chooseProvider(p);
        else setError({ message: `the workspace of ${fixed.name} is on provider ${fixed.provider}, which this spuff does not have`, notes: [], hints: [] });
      },
      (err) => setError(errorInfo(err)),
    );
    return () => catalogLoad.current?.abort();
  }, [services]);

  // On the summary: does a kept workspace of this name wait on this provider (up attaches it), or is a new one made?
  useEffect(() => {
    if (step.kind !== "summary" || !provider?.workspace || fixed) return;
    const ac = new AbortController();
    setWork("loading");
    services.workspaceFor(provider.name, name, ac.signal).then(
      (w) => !ac.signal.aborted && setWork(w),
      (err) => !ac.signal.aborted && setWork({ error: errorInfo(err).message }),
    );
    return () => ac.abort();
  }, [step.kind, provider, name, fixed, services]);

  const locations = catalog?.locations ?? [];
  const sizes = sizesFor(catalog, location);
  const available = (s: CatalogSize) => s.locations.includes(location ?? "");

  const go = (next: Step, at = 0) => {
    setError(undefined);
    setCursor(at);
    setStep(next);
  };

  const chooseProvider = (p: ProviderChoice) => {
    setProvider(p);
    setCatalog(undefined);
    setLocation(undefined);
    setSize(undefined);
    if (!p.catalog) return go({ kind: fixed ? "summary" : "name" });
    go({ kind: "catalog" });
    const ac = new AbortController();
    catalogLoad.current = ac;
    services.catalog(p.name, ac.signal).then(
      (c) => {
        if (ac.signal.aborted || !c) return;
        setCatalog(c);
        // A kept workspace's VM goes where its volume is: only the size is asked.
        if (fixed) return toSizes(fixed.location ?? c.defaults.location ?? "");
        go({ kind: "location" }, Math.max(0, c.locations.findIndex((l) => l.name === c.defaults.location)));
      },
      (err) => {
        if (!ac.signal.aborted) setError(errorInfo(err));
      },
    );
  };

  const toSizes = (loc: string) => {
    setLocation(loc);
    const list = sizesFor(catalogRef.current, loc);
    const at = list.findIndex((s) => s.name === (sizeRef.current?.name ?? catalogRef.current?.defaults.size) && s.locations.includes(loc));
    go({ kind: "size" }, Math.max(0, at));
  };

  const back = () => {
    const step = stepRef.current;
    const provider = providerRef.current;
    const providers = providersRef.current;
    const locations = catalogRef.current?.locations ?? [];
    const location = locationRef.current;
    const size = sizeRef.current;
    const sizes = sizesFor(catalogRef.current, location);
    if (step.kind === "providers") return props.onCancel();
    if (fixed) {
      // Provider, location and name are the workspace's: back from the size (or a summary without one) is cancel.
      if (step.kind === "summary" && provider?.catalog) return go({ kind: "size" }, Math.max(0, sizes.findIndex((s) => s.name === size?.name)));
      catalogLoad.current?.abort();
      return props.onCancel();
    }
    if (step.kind === "catalog" || step.kind === "location") {
      catalogLoad.current?.abort();
      return go({ kind: "providers" }, Math.max(0, providers?.findIndex((p) => p.name === provider?.name) ?? 0));
    }
    if (step.kind === "size") return go({ kind: "location" }, Math.max(0, locations.findIndex((l) => l.name === location)));
    if (step.kind === "name") {
      if (!provider?.catalog) return go({ kind: "providers" }, Math.max(0, providers?.findIndex((p) => p.name === provider?.name) ?? 0));
      return go({ kind: "size" }, Math.max(0, sizes.findIndex((s) => s.name === size?.name)));
    }
    if (step.kind === "summary") return go({ kind: "name" });
  };

  const submitName = (text: string) => {
    try {
      validateName(text);
      if (services.exists(text)) {
        setError({ message: `a VM named "${text}" already exists`, notes: [], hints: ["pick another name"] });
        return;
      }
      setName(text);
      go({ kind: "summary" });
    } catch (err) {
      setError(errorInfo(err));
    }
  };

  useKeys(
    (input, key) => {
      const step = stepRef.current;
      const cursor = cursorRef.current;
      const providers = providersRef.current ?? [];
      const locations = catalogRef.current?.locations ?? [];
      const sizes = sizesFor(catalogRef.current, locationRef.current);
      const length = step.kind === "providers" ? providers.length : step.kind === "location" ? locations.length : step.kind === "size" ? sizes.length : 0;
      if (key.escape || (key.ctrl && input === "c")) return back();
      if (key.upArrow || input === "k") return setCursor(Math.max(0, cursor - 1));
      if (key.downArrow || input === "j") return setCursor(Math.min(Math.max(0, length - 1), cursor + 1));
      if (!key.return && !(step.kind === "summary" && input === "y")) return;
      if (step.kind === "providers" && providers[cursor]) chooseProvider(providers[cursor]);
      else if (step.kind === "location" && locations[cursor]) toSizes(locations[cursor].name);
      else if (step.kind === "size" && sizes[cursor]) {
        const s = sizes[cursor];
        const loc = locationRef.current ?? "";
        if (!s.locations.includes(loc)) {
          setError({ message: `${s.name} is not available in ${loc}`, notes: [], hints: [s.locations.length ? `it is available in ${s.locations.join(", ")}` : "no location offers it right now"] });
          return;
        }
        setSize(s);
        go({ kind: fixed ? "summary" : "name" });
      } else if (step.kind === "summary" && providerRef.current) {
        props.onCreate({ provider: providerRef.current.name, name: nameRef.current, size: sizeRef.current?.name, location: locationRef.current });
      }
    },
    step.kind !== "name",
  );

  const ttl = services.ttl();
  const listHeight = height - 8;
  let body;
  if (step.kind === "providers") {
    body = providers ? (
      <List
        items={providers}
        cursor={cursor}
        height={listHeight}
        render={(p) => `${p.name.padEnd(10)}${p.description}${p.configured ? "  (configured)" : ""}`}
      />
    ) : error ? null : (
      <Text>
        <Spinner /> loading providers…
      </Text>
    );
  } else if (step.kind === "catalog") {
    body = error ? null : (
      <Text>
        <Spinner /> asking {provider?.name} for its locations and sizes…
      </Text>
    );
  } else if (step.kind === "location") {
    body = (
      <List
        items={locations}
        cursor={cursor}
        height={listHeight}
        render={(l) => {
          const n = catalog?.sizes.filter((s) => s.locations.includes(l.name) && !s.deprecated).length ?? 0;
          return `${l.name.padEnd(8)}${l.description.padEnd(34)}${String(n).padStart(3)} sizes${l.name === catalog?.defaults.location ? "  (default)" : ""}`;
        }}
      />
    );
  } else if (step.kind === "size") {
    body = (
      <Box flexDirection="column">
        <Text bold>{`  ${"SIZE".padEnd(8)}${"VCPU".padStart(5)}${"RAM".padStart(7)}${"DISK".padStart(8)}${"PRICE/H".padStart(10)}${"MONTH".padStart(9)}  IN ${location}`}</Text>
        <List
          items={sizes}
          cursor={cursor}
          height={listHeight - 1}
          disabled={(s) => !available(s)}
          render={(s) => {
            const p = priceIn(s, location);
            const money = (n: number | undefined) => (n === undefined || !p ? "-" : formatMoney({ amount: n, currency: p.currency }));
            return `${s.name.padEnd(8)}${String(s.vcpus).padStart(5)}${`${s.memoryGiB}G`.padStart(7)}${`${s.diskGiB}G`.padStart(8)}${money(p?.hourly).padStart(10)}${money(p?.monthly).padStart(9)}  ${available(s) ? (s.deprecated ? "deprecated" : "available") : "not here"}`;
          }}
        />
      </Box>
    );
  } else if (step.kind === "name") {
    body = (
      <Box flexDirection="column">
        <Text>
          Name:{" "}
          <TextInput
            value={name}
            onChange={(v) => {
              setError(undefined);
              setName(v);
            }}
            onSubmit={submitName}
            onCancel={back}
          />
        </Text>
        <Text dimColor>{NAME_RULE}</Text>
      </Box>
    );
  } else {
    const p = size ? priceIn(size, location) : undefined;
    const rows: [string, string][] = [
      ["provider", `${provider?.name} — ${provider?.description}`],
      ...(location ? ([["location", `${location} — ${locations.find((l) => l.name === location)?.description ?? ""}`]] as [string, string][]) : []),
      ...(size ? ([["size", `${size.name} — ${size.vcpus} vCPU, ${size.memoryGiB} GB RAM, ${size.diskGiB} GB disk`]] as [string, string][]) : []),
      ...(!provider?.catalog ? ([["size", "from your config (spuff config show)"]] as [string, string][]) : []),
      ["name", name],
      ...(provider?.workspace && work !== undefined ? ([["~/work", workText(work, location, provider.catalog)]] as [string, string][]) : []),
      ["TTL", `${ttl.text} (config idle.ttl); it powers off earlier when idle`],
    ];
    if (p) {
      const cur = p.currency;
      rows.push(["price", `${formatMoney({ amount: p.hourly, currency: cur })} per hour${p.monthly !== undefined ? `, capped at ${formatMoney({ amount: p.monthly, currency: cur })} per month` : ""}`]);
      rows.push(["estimate", `at most ${formatMoney({ amount: estimate(p.hourly, ttl.hours, p.monthly), currency: cur })} if it runs its whole ${ttl.text} TTL`]);
    } else if (provider?.catalog) {
      rows.push(["price", "unknown (the provider reports no price here)"]);
    } else {
      rows.push(["price", provider?.free ? "free: it runs on this machine" : "not reported by this provider"]);
    }
    body = (
      <Box flexDirection="column" borderStyle="round" paddingX={1}>
        {rows.map(([k, v]) => (
          <Text key={k} wrap="truncate">
            <Text bold>{k.padEnd(9)}</Text>
            {v}
          </Text>
        ))}
      </Box>
    );
  }

  const titles: Record<Step["kind"], string> = {
    providers: "Provider",
    catalog: "Location",
    location: "Location",
    size: "Size",
    name: "Name",
    summary: "Summary",
  };
  const path = [provider?.name, location, size?.name].filter(Boolean).join(" › ");
  return (
    <Box flexDirection="column" width={width}>
      <Text>
        <Text bold>{fixed ? `New VM for the kept workspace ${fixed.name}` : "New VM"}</Text>
        <Text dimColor>
          {" "}
          · {titles[step.kind]}
          {path ? ` · ${path}` : ""}
        </Text>
      </Text>
      {body}
      {error ? <ErrorBox error={error} /> : null}
      <Keys
        width={width}
        keys={
          step.kind === "summary"
            ? [
                ["enter", "create"],
                ["esc", fixed && !provider?.catalog ? "cancel" : "back"],
              ]
            : step.kind === "name"
              ? [
                  ["enter", "next"],
                  ["esc", "back"],
                ]
              : [
                  ["↑↓", "move"],
                  ["enter", "choose"],
                  ["esc", step.kind === "providers" || fixed ? "cancel" : "back"],
                ]
        }
      />
    </Box>
  );
}
