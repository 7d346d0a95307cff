import { IMAGES, imageJson, SERVER_TYPES } from "./catalog.js";
import { PRICING } from "./pricing.js";
import { labelProblems, matches, parseSelector } from "./labels.js";

/**
 * The Hetzner fake's images (snapshots), as the API behaves (docs.hetzner.cloud, "Images", "Servers →
 * Create Image", "Pricing"): POST /servers/{id}/actions/create_image answers 201 with the new image (status
 * `creating`, `image_size` null) and a `create_image` action on the server and the image; the server is locked while
 * it runs; when it ends the image is `available` with its `image_size`. GET /images lists system images and
 * snapshots (filters type, status, name, label_selector, architecture, sort), PUT /images/{id} replaces labels and
 * description, DELETE /images/{id} answers 204 (system images cannot be deleted; a snapshot deleted while being created
 * makes its action end in error). A snapshot's id boots a server like an image name does.
 */

export interface FakeServerLike {
  id: number;
  name: string;
  type: string;
  image: string;
}

export interface ImagesHost {
  id(): number;
  server(id: number): FakeServerLike;
  assertUnlocked(s: FakeServerLike): void;
  /** An action on `resources` that succeeds after the fake's action delay; `fail` decides at the end whether it errors. */
  action(command: string, resources: { id: number; type: string }[], onDone: () => void, fail?: () => { code: string; message: string } | undefined): unknown;
  list(key: string, all: unknown[], q: Record<string, unknown>): [number, unknown];
  invalid(fields: { name: string; messages: string[] }[]): Error;
  notFound(what: string, id: number | string): Error;
  error(status: number, code: string, message: string): Error;
  stamp(): string;
  emit(event: string, data: unknown): void;
}

export interface SnapshotRec {
  id: number;
  description: string;
  status: "creating" | "available" | "unavailable";
  created: string;
  labels: Record<string, string>;
  createdFrom: { id: number; name: string };
  /** The system image the server ran, whose OS the snapshot keeps. */
  base: string;
  arch: "x86" | "arm";
  diskSize: number;
  /** GB stored, set when the snapshot is available (what Hetzner bills). */
  imageSize: number | null;
}

/** Snapshot price the fake's /pricing reports (gross EUR per GB-month; pricing.ts). */
export const SNAPSHOT_PRICE = { gross: PRICING.imagePerGbMonth };
/** What a snapshot of a freshly baked server stores, in GB. */
export const SNAPSHOT_SIZE_GB = 1.42;

export class FakeImages {
  readonly snapshots = new Map<number, SnapshotRec>();

  constructor(private readonly host: ImagesHost) {}

  /** A system image by name or id, or a snapshot by id (what POST /servers `image` accepts): its name for the record. */
  bootable(ref: string): { name: string } | undefined {
    const sys = IMAGES.find((i) => i.name === ref || String(i.id) === ref);
    if (sys) return { name: sys.name };
    const snap = /^\d+$/.test(ref) ? this.snapshots.get(Number(ref)) : undefined;
    return snap?.status === "available" ? { name: String(snap.id) } : undefined;
  }

  /** The image JSON of a server's record (a snapshot id, else undefined for the caller's system image). */
  jsonFor(ref: string) {
    const snap = /^\d+$/.test(ref) ? this.snapshots.get(Number(ref)) : undefined;
    return snap ? this.json(snap) : undefined;
  }

  json(s: SnapshotRec) {
    const base = IMAGES.find((i) => i.name === s.base) ?? IMAGES[0];
    return {
      id: s.id,
      type: "snapshot" as const,
      status: s.status,
      name: null,
      description: s.description,
      image_size: s.imageSize,
      disk_size: s.diskSize,
      created: s.created,
      created_from: { ...s.createdFrom },
      bound_to: null,
      os_flavor: base.os_flavor,
      os_version: base.os_version,
      rapid_deploy: false,
      protection: { delete: false },
      deprecated: null,
      deleted: null,
      labels: { ...s.labels },
      architecture: s.arch,
    };
  }

  /** Handles the image routes; undefined for every other route. */
  dispatch(method: string, template: string, p: Record<string, unknown>, q: Record<string, unknown>, b: Record<string, unknown>): [number, unknown] | undefined {
    const id = p.id as number;
    switch (`${method} ${template}`) {
      case "POST /servers/{id}/actions/create_image":
        return this.create(id, b);
      case "GET /images":
        return this.listImages(q);
      case "GET /images/{id}":
        return [200, { image: this.json(this.get(id)) }];
      case "PUT /images/{id}": {
        const s = this.get(id);
        if (b.labels !== undefined) {
          const bad = labelProblems(b.labels as Record<string, string>);
          if (bad.length) throw this.host.invalid([{ name: "labels", messages: bad }]);
          s.labels = { ...(b.labels as Record<string, string>) };
        }
        if (typeof b.description === "string") s.description = b.description;
        return [200, { image: this.json(s) }];
      }
      case "DELETE /images/{id}": {
        if (IMAGES.some((i) => i.id === id)) throw this.host.error(403, "forbidden", "system images cannot be deleted");
        this.get(id);
        this.snapshots.delete(id);
        this.host.emit("image-deleted", { id });
        return [204, undefined];
      }
    }
    return undefined;
  }

  private get(id: number): SnapshotRec {
    const s = this.snapshots.get(id);
    if (!s) {
      if (IMAGES.some((i) => i.id === id)) throw this.host.error(404, "not_found", `image ${id} is a system image; the fake serves only snapshots here`);
      throw this.host.notFound("image", id);
    }
    return s;
  }

  private create(serverId: number, b: Record<string, unknown>): [number, unknown] {
    const server = this.host.server(serverId);
    this.host.assertUnlocked(server);
    const labels = (b.labels as Record<string, string> | undefined) ?? {};
    const bad = labelProblems(labels);
    if (bad.length) throw this.host.invalid([{ name: "labels", messages: bad }]);
    if (b.type === "backup") throw this.host.error(422, "invalid_input", "the fake makes snapshots only");
    const type = SERVER_TYPES.find((t) => t.name === server.type) ?? SERVER_TYPES[0];
    const from = this.snapshots.get(Number(server.image));
    const rec: SnapshotRec = {
      id: this.host.id(),
      description: typeof b.description === "string" ? b.description : `${server.name}-${this.host.stamp()}`,
      status: "creating",
      created: this.host.stamp(),
      labels: { ...labels },
      createdFrom: { id: server.id, name: server.name },
      base: from?.base ?? server.image,
      arch: type.arch,
      diskSize: type.disk,
      imageSize: null,
    };
    this.snapshots.set(rec.id, rec);
    const action = this.host.action(
      "create_image",
      [
        { id: server.id, type: "server" },
        { id: rec.id, type: "image" },
      ],
      () => {
        rec.status = "available";
        rec.imageSize = SNAPSHOT_SIZE_GB;
      },
      () => (this.snapshots.has(rec.id) ? undefined : { code: "image_deleted", message: "the image was deleted while it was being created" }),
    );
    this.host.emit("image-created", { id: rec.id, server: server.id });
    return [201, { image: this.json(rec), action }];
  }

  private listImages(q: Record<string, unknown>): [number, unknown] {
    const selector = parseSelector(typeof q.label_selector === "string" ? q.label_selector : "");
    const types = (q.type as string[] | undefined) ?? [];
    const statuses = (q.status as string[] | undefined) ?? [];
    const system = IMAGES.flatMap((i) => [imageJson(i, "x86"), imageJson(i, "arm")].map((j) => ({ ...j, id: j.architecture === "arm" ? i.id + 1_000_000 : i.id })));
    const all = [...system, ...[...this.snapshots.values()].map((s) => this.json(s))].filter(
      (i) =>
        (types.length === 0 || types.includes(i.type)) &&
        (statuses.length === 0 || statuses.includes(i.status)) &&
        (q.name === undefined || i.name === q.name) &&
        (q.architecture === undefined || i.architecture === q.architecture) &&
        matches(i.labels, selector),
    );
    return this.host.list("images", all.sort((a, b) => a.id - b.id), q);
  }
}

