import { LOCATIONS } from "./catalog.js";
import { labelProblems, matches, type parseSelector } from "./labels.js";

/**
 * The fake's Volumes API (docs.hetzner.cloud "Volumes"), kept apart from servers so the two grow independently.
 * Semantics the fake enforces, as the API documents them or answers in practice:
 * - POST /volumes: `size` 10..10240 GB, a unique name (alphanumerics, `-`, `_`, `.`, at most 64), `location` or
 *   `server` (one of them), `automount` only with `server`, `format` xfs or ext4. The volume is "creating" and locked
 *   while its create_volume action runs; with `server` an attach_volume action follows.
 * - a volume and a server must be in the same location (attach, POST /servers `volumes`): 422 invalid_input.
 * - attaching an attached volume: 422 volume_already_attached; detaching a detached one: 422 invalid_input.
 * - DELETE of an attached volume: 422 service_error "volume with ID '…' is still attached to a server" (what the API
 *   answers; nothing is deleted).
 * - while an action runs on a volume (create, attach, detach, or the delete of the server it is attached to) it is
 *   locked: actions on it and DELETE answer 423 locked.
 * - deleting a server detaches its volumes when the delete action finishes.
 */

export interface VolumeRec {
  id: number;
  name: string;
  created: string;
  /** Server id, or null when detached. */
  server: number | null;
  location: string;
  size: number;
  labels: Record<string, string>;
  status: "creating" | "available";
  format: string | null;
  /** The `automount` of its last attach (tests assert spuff keeps it off). */
  automount: boolean;
}

interface ActionLike {
  id: number;
  status: "running" | "success" | "error";
  resources: { id: number; type: string }[];
}

/** What the Volumes API needs from the rest of the fake. */
export interface VolumeContext {
  id(): number;
  stamp(): string;
  actionDelayMs(): number;
  /** Creates an action that succeeds after `delayMs` (after `gate`, when given) and runs `onDone`. */
  action(command: string, resources: { id: number; type: string }[], delayMs: number, onDone?: () => void, gate?: Promise<unknown>): ActionLike;
  actionJson(a: ActionLike): unknown;
  actions(): Iterable<ActionLike>;
  /** The server's location, or undefined when there is no such server. */
  serverLocation(id: number): string | undefined;
  serverLocked(id: number): boolean;
  list(key: string, all: unknown[], q: Record<string, unknown>): [number, unknown];
  selector(text: unknown): ReturnType<typeof parseSelector>;
  emit(event: string, payload: unknown): void;
  error(status: number, code: string, message: string, details?: unknown): Error;
  invalid(fields: { name: string; messages: string[] }[]): Error;
  notFound(what: string, id: number | string): Error;
}

const VOLUME_NAME = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

export class FakeVolumes {
  readonly volumes = new Map<number, VolumeRec>();

  constructor(private readonly ctx: VolumeContext) {}

  /** Adds a volume directly (tests: a volume that exists before spuff runs, one made by another tool). */
  seed(v: { name: string; location?: string; size?: number; labels?: Record<string, string>; server?: number | null; created?: string }): VolumeRec {
    const rec: VolumeRec = {
      id: this.ctx.id(),
      name: v.name,
      created: v.created ?? this.ctx.stamp(),
      server: v.server ?? null,
      location: v.location ?? "fsn1",
      size: v.size ?? 10,
      labels: { ...v.labels },
      status: "available",
      format: null,
      automount: false,
    };
    this.volumes.set(rec.id, rec);
    return rec;
  }

  locked(v: VolumeRec): boolean {
    for (const a of this.ctx.actions()) if (a.status === "running" && a.resources.some((r) => r.type === "volume" && r.id === v.id)) return true;
    return false;
  }

  /** Volume ids attached to a server (its `volumes` field). */
  attachedTo(serverId: number): number[] {
    return [...this.volumes.values()].filter((v) => v.server === serverId).map((v) => v.id);
  }

  /**
   * POST /servers with `volumes`: checks them before the server exists (any problem refuses the whole create).
   * Returns the records to attach.
   */
  checkForServer(ids: unknown, location: string): VolumeRec[] {
    if (ids === undefined) return [];
    const out: VolumeRec[] = [];
    for (const id of ids as number[]) {
      const v = this.volumes.get(id);
      if (!v) throw this.ctx.invalid([{ name: "volumes", messages: [`volume with ID '${id}' not found`] }]);
      if (v.location !== location) {
        throw this.ctx.invalid([{ name: "volumes", messages: [`volume ${id} is in ${v.location}, the server in ${location}: server and volume must be in the same location`] }]);
      }
      if (v.server !== null) throw this.ctx.error(422, "volume_already_attached", `volume with ID '${id}' is already attached to a server, detach first`);
      if (this.locked(v)) throw this.ctx.error(423, "locked", `volume ${id} is locked by a running action`);
      out.push(v);
    }
    return out;
  }

  /** Attaches the checked volumes to a new server; one attach_volume action each, done when `gate` settles. */
  attachAtCreate(vols: VolumeRec[], serverId: number, automount: boolean, gate?: Promise<unknown>): ActionLike[] {
    return vols.map((v) => {
      v.server = serverId;
      v.automount = automount;
      return this.ctx.action(
        "attach_volume",
        [
          { id: v.id, type: "volume" },
          { id: serverId, type: "server" },
        ],
        this.ctx.actionDelayMs(),
        undefined,
        gate,
      );
    });
  }

  /** The server is being deleted: its volumes are locked by the delete action (their resources) and detached by it. */
  resourcesOf(serverId: number): { id: number; type: string }[] {
    return this.attachedTo(serverId).map((id) => ({ id, type: "volume" }));
  }

  detachAll(serverId: number): void {
    for (const v of this.volumes.values()) {
      if (v.server === serverId) {
        v.server = null;
        this.ctx.emit("volume-detached", { id: v.id, name: v.name });
      }
    }
  }

  json(v: VolumeRec) {
    const loc = LOCATIONS.find((l) => l.name === v.location) ?? LOCATIONS[0];
    return {
      id: v.id,
      created: v.created,
      name: v.name,
      server: v.server,
      location: loc,
      size: v.size,
      linux_device: `/dev/disk/by-id/scsi-0HC_Volume_${v.id}`,
      protection: { delete: false },
      labels: { ...v.labels },
      status: v.status,
      format: v.format,
    };
  }

  private get(id: number): VolumeRec {
    const v = this.volumes.get(id);
    if (!v) throw this.ctx.notFound("volume", id);
    return v;
  }

  private assertUnlocked(v: VolumeRec): void {
    if (this.locked(v)) throw this.ctx.error(423, "locked", `volume ${v.id} is locked by a running action`);
  }

  /** The Volumes API's operations; undefined for anything else. */
  dispatch(method: string, template: string, id: number, q: Record<string, unknown>, b: Record<string, unknown>): [number, unknown] | undefined {
    switch (`${method} ${template}`) {
      case "GET /volumes": {
        const selector = this.ctx.selector(q.label_selector);
        const statuses = (q.status as string[] | undefined) ?? [];
        const list = [...this.volumes.values()].filter(
          (v) => matches(v.labels, selector) && (q.name === undefined || v.name === q.name) && (statuses.length === 0 || statuses.includes(v.status)),
        );
        return this.ctx.list("volumes", sortVolumes(list, q.sort as string[] | undefined).map((v) => this.json(v)), q);
      }
      case "POST /volumes":
        return this.create(b);
      case "GET /volumes/{id}":
        return [200, { volume: this.json(this.get(id)) }];
      case "PUT /volumes/{id}": {
        const v = this.get(id);
        const fields: { name: string; messages: string[] }[] = [];
        if (b.labels !== undefined) {
          const bad = labelProblems(b.labels as Record<string, string>);
          if (bad.length) fields.push({ name: "labels", messages: bad });
        }
        if (b.name !== undefined && !VOLUME_NAME.test(String(b.name))) fields.push({ name: "name", messages: ["invalid volume name"] });
        if (fields.length) throw this.ctx.invalid(fields);
        if (b.name !== undefined && [...this.volumes.values()].some((x) => x.name === b.name && x.id !== id)) {
          throw this.ctx.error(409, "uniqueness_error", "volume name is already used", { fields: [{ name: "name", messages: ["is already used"] }] });
        }
        if (b.name !== undefined) v.name = String(b.name);
        if (b.labels !== undefined) v.labels = { ...(b.labels as Record<string, string>) };
        return [200, { volume: this.json(v) }];
      }
      case "DELETE /volumes/{id}": {
        const v = this.get(id);
        this.assertUnlocked(v);
        if (v.server !== null) throw this.ctx.error(422, "service_error", `volume with ID '${id}' is still attached to a server`);
        this.volumes.delete(id);
        this.ctx.emit("volume-deleted", { id, name: v.name });
        return [204, undefined];
      }
      case "POST /volumes/{id}/actions/attach": {
        const v = this.get(id);
        const serverId = Number(b.server);
        const where = this.ctx.serverLocation(serverId);
        if (where === undefined) throw this.ctx.invalid([{ name: "server", messages: [`server with ID '${serverId}' not found`] }]);
        this.assertUnlocked(v);
        if (this.ctx.serverLocked(serverId)) throw this.ctx.error(423, "locked", `server ${serverId} is locked by a running action`);
        if (v.server !== null) throw this.ctx.error(422, "volume_already_attached", `volume with ID '${id}' is already attached to a server, detach first`);
        if (where !== v.location) {
          throw this.ctx.invalid([{ name: "server", messages: [`volume ${id} is in ${v.location}, the server in ${where}: server and volume must be in the same location`] }]);
        }
        const automount = b.automount === true;
        const a = this.ctx.action(
          "attach_volume",
          [
            { id, type: "volume" },
            { id: serverId, type: "server" },
          ],
          this.ctx.actionDelayMs(),
          () => {
            v.server = serverId;
            v.automount = automount;
          },
        );
        return [201, { action: this.ctx.actionJson(a) }];
      }
      case "POST /volumes/{id}/actions/detach": {
        const v = this.get(id);
        this.assertUnlocked(v);
        if (v.server === null) throw this.ctx.invalid([{ name: "volume", messages: [`volume with ID '${id}' is not attached to a server`] }]);
        const serverId = v.server;
        const a = this.ctx.action(
          "detach_volume",
          [
            { id, type: "volume" },
            { id: serverId, type: "server" },
          ],
          this.ctx.actionDelayMs(),
          () => {
            v.server = null;
            this.ctx.emit("volume-detached", { id, name: v.name });
          },
        );
        return [201, { action: this.ctx.actionJson(a) }];
      }
    }
    return undefined;
  }

  private create(b: Record<string, unknown>): [number, unknown] {
    const fields: { name: string; messages: string[] }[] = [];
    const name = String(b.name);
    if (!VOLUME_NAME.test(name)) {
      fields.push({ name: "name", messages: ["must be 1-64 characters [A-Za-z0-9._-], starting and ending with an alphanumeric character"] });
    }
    const size = Number(b.size);
    if (!Number.isInteger(size) || size < 10 || size > 10240) fields.push({ name: "size", messages: ["must be between 10 and 10240 (GB)"] });
    if (b.format !== undefined && b.format !== "xfs" && b.format !== "ext4") fields.push({ name: "format", messages: ["must be one of xfs, ext4"] });
    const labels = (b.labels as Record<string, string> | undefined) ?? {};
    const bad = labelProblems(labels);
    if (bad.length) fields.push({ name: "labels", messages: bad });
    const serverId = b.server === undefined ? undefined : Number(b.server);
    if (b.location === undefined && serverId === undefined) fields.push({ name: "location", messages: ["location or server is required"] });
    if (b.location !== undefined && serverId !== undefined) fields.push({ name: "location", messages: ["give either location or server, not both"] });
    if (b.automount !== undefined && serverId === undefined) fields.push({ name: "automount", messages: ["automount needs server"] });
    let location: string | undefined;
    if (b.location !== undefined) {
      location = LOCATIONS.find((l) => l.name === b.location || String(l.id) === b.location)?.name;
      if (!location) fields.push({ name: "location", messages: [`location "${String(b.location)}" not found`] });
    }
    if (serverId !== undefined) {
      location = this.ctx.serverLocation(serverId);
      if (!location) fields.push({ name: "server", messages: [`server with ID '${serverId}' not found`] });
    }
    if (fields.length) throw this.ctx.invalid(fields);
    if ([...this.volumes.values()].some((v) => v.name === name)) {
      throw this.ctx.error(409, "uniqueness_error", "volume name is already used", { fields: [{ name: "name", messages: ["is already used"] }] });
    }
    if (serverId !== undefined && this.ctx.serverLocked(serverId)) throw this.ctx.error(423, "locked", `server ${serverId} is locked by a running action`);
    const v: VolumeRec = {
      id: this.ctx.id(),
      name,
      created: this.ctx.stamp(),
      server: null,
      location: location ?? "",
      size,
      labels: { ...labels },
      status: "creating",
      format: typeof b.format === "string" ? b.format : null,
      automount: false,
    };
    this.volumes.set(v.id, v);
    const delay = this.ctx.actionDelayMs();
    let done!: () => void;
    const created = new Promise<void>((r) => (done = r));
    const create = this.ctx.action("create_volume", [{ id: v.id, type: "volume" }], delay, () => {
      v.status = "available";
      done();
    });
    const next: ActionLike[] = [];
    if (serverId !== undefined) {
      const automount = b.automount === true;
      next.push(
        this.ctx.action(
          "attach_volume",
          [
            { id: v.id, type: "volume" },
            { id: serverId, type: "server" },
          ],
          delay,
          () => {
            v.server = serverId;
            v.automount = automount;
          },
          created,
        ),
      );
    }
    this.ctx.emit("volume-created", { id: v.id, name });
    return [201, { volume: this.json(v), action: this.ctx.actionJson(create), next_actions: next.map((a) => this.ctx.actionJson(a)) }];
  }
}

function sortVolumes(list: VolumeRec[], sort: string[] | undefined): VolumeRec[] {
  const out = [...list];
  if (!sort?.length) return out.sort((a, b) => a.id - b.id);
  const keys = sort.map((s) => s.split(":") as [keyof VolumeRec, string?]);
  return out.sort((a, b) => {
    for (const [k, dir] of keys) {
      const x = a[k] ?? "";
      const y = b[k] ?? "";
      const c = x < y ? -1 : x > y ? 1 : 0;
      if (c) return dir === "desc" ? -c : c;
    }
    return 0;
  });
}
